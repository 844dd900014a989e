//! The one place where a gateway-made error becomes an HTTP response.
//!
//! Every handler returns `Result<Response, GatewayError>`; nothing else builds error bodies. Each variant
//! names one condition, and its status code, error code and headers are decided here, so the contract
//! table of docs/design.md §5 can be read off this file.
//!
//! `oauth.rs` holds the OAuth 2.0 error of RFC 6749 §5.2 (code, description), which the token,
//! revocation and introspection endpoints answer with and the authorization endpoint redirects with.
//!
//! May import: `http_util`, `html`. Lower modules have their own error types that this file maps
//! (`http_util::BodyError`); higher ones convert theirs into `GatewayError`.

pub mod oauth;
pub mod storage;

pub use storage::{StoreError, StoreResult};

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};

use crate::error::oauth::OAuthError;
use crate::http_util::{Body, BodyError, FormError, full};

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
    /// The upstream refused the connection, could not be reached, or closed the connection before a
    /// response head. The body names the API, never the target's address (that is in the log line).
    #[error("the upstream of API `{api}` {}", cause.description())]
    BadGateway { api: String, cause: UpstreamCause },
    /// The upstream did not accept a connection within `limits.upstream_connect_timeout`, or sent no
    /// response head within `upstream.timeout`.
    #[error("the upstream of API `{api}` {}", cause.description())]
    GatewayTimeout { api: String, cause: UpstreamCause },
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

/// A request body that could not be read: 413, 408 (and close), 400 (and close).
impl From<BodyError> for GatewayError {
    fn from(err: BodyError) -> GatewayError {
        match err {
            BodyError::TooLarge { limit } => GatewayError::PayloadTooLarge { limit },
            BodyError::Stalled => GatewayError::RequestTimeout,
            BodyError::Unreadable => GatewayError::BadRequest("the request body could not be read"),
        }
    }
}

/// A refused form body: 400 `invalid_request` (RFC 6749 §5.2), or the body's own answer.
impl From<FormError> for GatewayError {
    fn from(err: FormError) -> GatewayError {
        match err {
            FormError::Body(body) => body.into(),
            other => GatewayError::OAuth(OAuthError::invalid_request(other.description())),
        }
    }
}

/// Why an upstream request failed, as far as the gateway can tell: a refusal and a reset are 502, a
/// connect timeout and a missing response head are 504 (docs/design.md §5: "refused/unreachable" 502,
/// "timeout" 504; nginx answers a connect timeout with 504 too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamCause {
    /// Connection refused (nothing listens at the target).
    Refused,
    /// No connection within `limits.upstream_connect_timeout`.
    ConnectTimeout,
    /// Any other connect failure (unreachable network, DNS, TLS handshake).
    Unreachable,
    /// The connection was made and then failed before a response head.
    Reset,
    /// Connected, and no response head within `upstream.timeout`.
    NoAnswer,
}

impl UpstreamCause {
    /// From the upstream client's error: the io::Error kind at the bottom of the chain tells a refusal
    /// from a connect timeout (hyper-util's connector reports its timeout as `TimedOut`).
    pub fn of(err: &hyper_util::client::legacy::Error) -> UpstreamCause {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
        let mut kind = None;
        while let Some(e) = source {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                kind = Some(io.kind());
            }
            source = e.source();
        }
        match (err.is_connect(), kind) {
            (true, Some(std::io::ErrorKind::ConnectionRefused)) => UpstreamCause::Refused,
            (true, Some(std::io::ErrorKind::TimedOut)) => UpstreamCause::ConnectTimeout,
            (true, _) => UpstreamCause::Unreachable,
            (false, _) => UpstreamCause::Reset,
        }
    }

    /// For the log line's `cause` field.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamCause::Refused => "refused",
            UpstreamCause::ConnectTimeout => "connect_timeout",
            UpstreamCause::Unreachable => "unreachable",
            UpstreamCause::Reset => "reset",
            UpstreamCause::NoAnswer => "no_answer",
        }
    }

    /// The end of the client's `error_description`, after "the upstream of API `id` ".
    fn description(self) -> &'static str {
        match self {
            UpstreamCause::Refused => "refused the connection",
            UpstreamCause::ConnectTimeout => "did not accept a connection in time",
            UpstreamCause::Unreachable => "could not be reached",
            UpstreamCause::Reset => "closed the connection before answering",
            UpstreamCause::NoAnswer => "did not answer in time",
        }
    }
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
            GatewayError::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            GatewayError::GatewayTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
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
            GatewayError::BadGateway { .. } => "bad_gateway",
            GatewayError::GatewayTimeout { .. } => "gateway_timeout",
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
            let html = crate::html::error_page(*status, description);
            let mut response = crate::html::html_response(*status, html);
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
                crate::http_util::set_rate_limit_headers(headers, *limit, *remaining, *reset_secs);
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

    /// The contract table (docs/design.md §5, §6 and RFC 6749/6750), one row per variant: status, the exact
    /// JSON body, and the headers that go with it. `variant_name` has no wildcard arm, so a new variant
    /// does not compile until it has a row here.
    #[tokio::test]
    async fn every_variant_answers_by_the_contract_table() {
        use http_body_util::BodyExt;
        use serde_json::json;

        fn variant_name(err: &GatewayError) -> &'static str {
            match err {
                GatewayError::NotFound => "NotFound",
                GatewayError::BadRequest(_) => "BadRequest",
                GatewayError::MethodNotAllowed => "MethodNotAllowed",
                GatewayError::MisdirectedRequest => "MisdirectedRequest",
                GatewayError::PayloadTooLarge { .. } => "PayloadTooLarge",
                GatewayError::RequestTimeout => "RequestTimeout",
                GatewayError::BadGateway { .. } => "BadGateway",
                GatewayError::GatewayTimeout { .. } => "GatewayTimeout",
                GatewayError::Unavailable { .. } => "Unavailable",
                GatewayError::AdminUnauthorized => "AdminUnauthorized",
                GatewayError::InvalidInput(_) => "InvalidInput",
                GatewayError::NoSuchResource(_) => "NoSuchResource",
                GatewayError::Conflict(_) => "Conflict",
                GatewayError::ReadOnly(_) => "ReadOnly",
                GatewayError::PolicyInUse { .. } => "PolicyInUse",
                GatewayError::Unauthorized { .. } => "Unauthorized",
                GatewayError::InsufficientScope { .. } => "InsufficientScope",
                GatewayError::TooManyRequests { .. } => "TooManyRequests",
                GatewayError::Internal => "Internal",
                GatewayError::AuthorizePage { .. } => "AuthorizePage",
                GatewayError::OAuth(_) => "OAuth",
            }
        }

        /// A variant, its status, its exact body and the headers it must carry.
        type Row = (
            GatewayError,
            u16,
            serde_json::Value,
            Vec<(&'static str, &'static str)>,
        );
        let rows: Vec<Row> = vec![
            (
                GatewayError::NotFound,
                404,
                json!({"error": "not_found", "error_description": "no API is served at this path"}),
                vec![],
            ),
            (
                GatewayError::BadRequest("bad path"),
                400,
                json!({"error": "invalid_request", "error_description": "bad path"}),
                vec![("connection", "close")],
            ),
            (
                GatewayError::MethodNotAllowed,
                405,
                json!({"error": "method_not_allowed", "error_description": "method not allowed"}),
                vec![],
            ),
            (
                GatewayError::MisdirectedRequest,
                421,
                json!({"error": "misdirected_request", "error_description": "this gateway does not serve the requested host"}),
                vec![],
            ),
            (
                GatewayError::PayloadTooLarge { limit: 10 },
                413,
                json!({"error": "request_too_large", "error_description": "request body exceeds the limit of 10 bytes"}),
                vec![("connection", "close")],
            ),
            (
                GatewayError::RequestTimeout,
                408,
                json!({"error": "request_timeout", "error_description": "the request body was not received in time"}),
                vec![("connection", "close")],
            ),
            (
                GatewayError::BadGateway {
                    api: "movies".into(),
                    cause: UpstreamCause::Refused,
                },
                502,
                json!({"error": "bad_gateway", "error_description": "the upstream of API `movies` refused the connection"}),
                vec![],
            ),
            (
                GatewayError::BadGateway {
                    api: "movies".into(),
                    cause: UpstreamCause::Unreachable,
                },
                502,
                json!({"error": "bad_gateway", "error_description": "the upstream of API `movies` could not be reached"}),
                vec![],
            ),
            (
                GatewayError::BadGateway {
                    api: "movies".into(),
                    cause: UpstreamCause::Reset,
                },
                502,
                json!({"error": "bad_gateway", "error_description": "the upstream of API `movies` closed the connection before answering"}),
                vec![],
            ),
            (
                GatewayError::GatewayTimeout {
                    api: "movies".into(),
                    cause: UpstreamCause::ConnectTimeout,
                },
                504,
                json!({"error": "gateway_timeout", "error_description": "the upstream of API `movies` did not accept a connection in time"}),
                vec![],
            ),
            (
                GatewayError::GatewayTimeout {
                    api: "movies".into(),
                    cause: UpstreamCause::NoAnswer,
                },
                504,
                json!({"error": "gateway_timeout", "error_description": "the upstream of API `movies` did not answer in time"}),
                vec![],
            ),
            (
                GatewayError::Unavailable {
                    description: "storage is unavailable; retry later",
                    retry_after_secs: 1,
                },
                503,
                json!({"error": "temporarily_unavailable", "error_description": "storage is unavailable; retry later"}),
                vec![("retry-after", "1")],
            ),
            (
                GatewayError::AdminUnauthorized,
                401,
                json!({"error": "unauthorized", "error_description": "admin authentication required"}),
                vec![("www-authenticate", "Bearer realm=\"tollgate-admin\"")],
            ),
            (
                GatewayError::InvalidInput("redirect_uris[0]: not an absolute URL".into()),
                400,
                json!({"error": "invalid_request", "error_description": "redirect_uris[0]: not an absolute URL"}),
                vec![],
            ),
            (
                GatewayError::NoSuchResource("no client `x`".into()),
                404,
                json!({"error": "not_found", "error_description": "no client `x`"}),
                vec![],
            ),
            (
                GatewayError::Conflict("client_id `x` is taken".into()),
                409,
                json!({"error": "conflict", "error_description": "client_id `x` is taken"}),
                vec![],
            ),
            (
                GatewayError::ReadOnly("defined in movies.yaml".into()),
                409,
                json!({"error": "read_only", "error_description": "defined in movies.yaml"}),
                vec![],
            ),
            (
                GatewayError::PolicyInUse {
                    description: "in use".into(),
                    clients: vec![json!({"api": "a", "client_id": "c"})],
                },
                409,
                json!({"error": "policy_in_use", "error_description": "in use", "clients": [{"api": "a", "client_id": "c"}]}),
                vec![],
            ),
            (
                GatewayError::Unauthorized {
                    realm: "movies".into(),
                    invalid_token: false,
                    description: "no access token".into(),
                },
                401,
                json!({"error": "unauthorized", "error_description": "no access token"}),
                vec![("www-authenticate", "Bearer realm=\"movies\"")],
            ),
            (
                GatewayError::Unauthorized {
                    realm: "movies".into(),
                    invalid_token: true,
                    description: "the token has \"expired\"".into(),
                },
                401,
                json!({"error": "invalid_token", "error_description": "the token has \"expired\""}),
                vec![(
                    "www-authenticate",
                    "Bearer realm=\"movies\", error=\"invalid_token\", error_description=\"the token has expired\"",
                )],
            ),
            (
                GatewayError::InsufficientScope {
                    realm: "movies".into(),
                    scope: "write".into(),
                },
                403,
                json!({"error": "insufficient_scope", "error_description": "the access token lacks the required scope 'write'"}),
                vec![(
                    "www-authenticate",
                    "Bearer realm=\"movies\", error=\"insufficient_scope\", scope=\"write\"",
                )],
            ),
            (
                GatewayError::TooManyRequests {
                    description: "rate limit exceeded",
                    limit: 5,
                    remaining: 0,
                    reset_secs: 3,
                    retry_after_secs: 2,
                },
                429,
                json!({"error": "rate_limited", "error_description": "rate limit exceeded"}),
                vec![
                    ("retry-after", "2"),
                    ("x-ratelimit-limit", "5"),
                    ("x-ratelimit-remaining", "0"),
                    ("x-ratelimit-reset", "3"),
                ],
            ),
            (
                GatewayError::Internal,
                500,
                json!({"error": "server_error", "error_description": "internal error"}),
                vec![],
            ),
            (
                GatewayError::OAuth(OAuthError::invalid_client(true)),
                401,
                json!({"error": "invalid_client", "error_description": OAuthError::invalid_client(true).description}),
                vec![
                    (
                        "www-authenticate",
                        "Basic realm=\"tollgate\", charset=\"UTF-8\"",
                    ),
                    ("pragma", "no-cache"),
                ],
            ),
        ];
        let mut covered = std::collections::BTreeSet::new();
        for (err, status, body, headers) in rows {
            covered.insert(variant_name(&err));
            let name = variant_name(&err);
            let response = err.into_response();
            assert_eq!(response.status().as_u16(), status, "{name}");
            assert_eq!(
                response.headers()[CONTENT_TYPE],
                "application/json",
                "{name}"
            );
            assert_eq!(response.headers()[CACHE_CONTROL], "no-store", "{name}");
            for (header, value) in headers {
                assert_eq!(
                    response.headers().get(header).and_then(|v| v.to_str().ok()),
                    Some(value),
                    "{name}: {header}"
                );
            }
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            let actual: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(actual, body, "{name}");
        }
        // The HTML one: the authorization endpoint's page for errors that must not be redirected.
        let page = GatewayError::AuthorizePage {
            status: StatusCode::TOO_MANY_REQUESTS,
            description: "too many failed logins".into(),
            retry_after_secs: Some(30),
        };
        covered.insert(variant_name(&page));
        let response = page.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[RETRY_AFTER], "30");
        assert!(
            response.headers()[CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let html = response.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&html).contains("too many failed logins"));
        assert_eq!(covered.len(), 21, "every variant has a row: {covered:?}");
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
