//! The admin API (docs/design.md §6): a separate listener, every route behind the admin secret.
//!
//! The routes are data ([`ROUTES`], in `routes.rs`): a request is matched against that table and
//! nothing else, and tests hold the table, `docs/admin-openapi.json` (served at `/openapi.json`) and
//! `docs/admin-api.md` together. Reference: docs/admin-api.md.
//!
//! May import: `proxy` (the running gateway it reads and reloads) and everything below it.
//! Nothing imports `admin` but `lib.rs`, which serves it on its own listener.

mod clients;
mod login_sessions;
pub mod openapi;
mod policies;
pub mod routes;
mod sessions;
pub mod stats;
pub(crate) mod ui;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::error::{GatewayError, json_response};
use crate::http_util::{Body, full};
use crate::proxy::gateway::Gateway;
use crate::server::ConnInfo;
use crate::store::StoreError;
use routes::{Call, Unrouted};

pub use routes::{ROUTES, Route};

/// What the admin listener serves from: the running gateway, and the web UI's own state (its
/// signed-in sessions and sign-in throttle), which nothing below `admin` needs to know of.
pub struct Admin {
    pub gateway: Arc<Gateway>,
    ui: ui::UiState,
}

impl Admin {
    pub fn new(gateway: Arc<Gateway>) -> Admin {
        let idle = gateway
            .settings()
            .admin
            .as_ref()
            .map_or(crate::config::DEFAULT_UI_IDLE_TIMEOUT, |a| {
                a.ui_idle_timeout
            });
        Admin {
            gateway,
            ui: ui::UiState::new(idle),
        }
    }
}

pub async fn handle(admin: Arc<Admin>, req: Request<Incoming>, conn: ConnInfo) -> Response<Body> {
    let gateway = &admin.gateway;
    // The web UI has its own sign-in (a session cookie, not the bearer secret).
    if ui::owns(req.uri().path()) {
        return ui::handle(gateway, &admin.ui, req, conn).await;
    }
    if let Err(err) = authorize(gateway, &req) {
        return RouteError::from(err).into_response();
    }
    dispatch(gateway, req, conn.peer.ip()).await
}

/// Serves an admin API request that is already authorized: the admin listener after the bearer
/// check, and the web UI (signed in), which calls the API in-process through this function.
pub(crate) async fn dispatch<B>(
    gateway: &Gateway,
    req: Request<B>,
    peer: std::net::IpAddr,
) -> Response<Body>
where
    B: hyper::body::Body,
    B::Error: Into<crate::http_util::BoxError>,
{
    match route(gateway, req, peer).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

async fn route<B>(
    gateway: &Gateway,
    req: Request<B>,
    peer: std::net::IpAddr,
) -> Result<Response<Body>, RouteError>
where
    B: hyper::body::Body,
    B::Error: Into<crate::http_util::BoxError>,
{
    // Routed by decoded path segments, so ids in the path may carry any character (`a%2Fb` is one
    // segment `a/b`). Owned, because a handler may take the request (its body) by value.
    let segments = path_segments(req.uri().path())?;
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let (handler, params) = routes::resolve(req.method(), &segments).map_err(RouteError::from)?;
    let Some(call) = handler.bind(&params) else {
        // The route table and `Handler::bind` disagree: a bug that the unit tests rule out.
        tracing::error!(
            ?handler,
            "admin route with parameters its handler does not take"
        );
        return Err(RouteError::Gateway(GatewayError::Internal));
    };
    let response = match call {
        Call::Health => gateway.health_response(true).await,
        Call::Metrics => {
            let mut text = gateway.metrics.render();
            render_limiter_errors(&mut text, gateway.limiter.as_ref());
            render_targets(&mut text, gateway);
            text.push_str(&format!(
                "# HELP tollgate_tunnels_open WebSocket tunnels open now.\n# TYPE tollgate_tunnels_open gauge\ntollgate_tunnels_open {}\n",
                gateway.tunnels.open()
            ));
            let mut response = Response::new(full(Bytes::from(text)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            response
        }
        Call::Stats => stats::response(gateway, req.uri().query())?,
        Call::Apis => apis(gateway),
        Call::Targets { api } => targets(gateway, api)?,
        Call::Reload => reload(gateway).await,
        Call::OpenApi => openapi::response(),
        Call::AuthorizeClient { api } => {
            let (_, body) = crate::http_util::read_body(
                req,
                64 * 1024,
                gateway.runtime().config.limits.body_read_timeout,
            )
            .await
            .map_err(GatewayError::from)?;
            {
                let runtime = gateway.runtime();
                let ctx = crate::oauth::Ctx {
                    auth: &gateway.auth,
                    config: &runtime.config,
                    settings: gateway.settings(),
                    client_ip: peer,
                };
                crate::oauth::authorize::authorize_client(&ctx, api, &body).await?
            }
        }
        Call::Client { api, action } => clients::route(gateway, api, action, req).await?,
        Call::Policy(action) => policies::route(gateway, action, req).await?,
        Call::GetSession { sid } => sessions::get(gateway, sid, req.uri().query()).await?,
        Call::RevokeSession { sid } => sessions::revoke(gateway, sid).await?,
        Call::UserLoginSessions { username } => login_sessions::list(gateway, username).await?,
        Call::EndUserLoginSessions { username } => login_sessions::end(gateway, username).await?,
    };
    Ok(response)
}

/// A refusal before any handler ran, or a handler's error.
enum RouteError {
    Gateway(GatewayError),
    /// 405 with the `Allow` header RFC 9110 §15.5.6 requires.
    MethodNotAllowed(Vec<Method>),
}

impl From<GatewayError> for RouteError {
    fn from(err: GatewayError) -> RouteError {
        RouteError::Gateway(err)
    }
}

impl From<Unrouted> for RouteError {
    fn from(unrouted: Unrouted) -> RouteError {
        match unrouted {
            Unrouted::NotFound => RouteError::Gateway(GatewayError::NotFound),
            Unrouted::MethodNotAllowed(allowed) => RouteError::MethodNotAllowed(allowed),
        }
    }
}

impl RouteError {
    fn into_response(self) -> Response<Body> {
        match self {
            RouteError::Gateway(err) => err.into_response(),
            RouteError::MethodNotAllowed(allowed) => {
                let mut response = GatewayError::MethodNotAllowed.into_response();
                let allow: Vec<&str> = allowed.iter().map(Method::as_str).collect();
                if let Ok(value) = HeaderValue::from_str(&allow.join(", ")) {
                    response.headers_mut().insert(header::ALLOW, value);
                }
                response
            }
        }
    }
}

/// Storage errors: 503 with Retry-After when the backend is unreachable (retrying helps), 500 when a
/// stored value is corrupt (it does not).
fn storage(err: StoreError) -> GatewayError {
    match err {
        StoreError::Unavailable(_) => {
            tracing::warn!(error = %err, "storage error in the admin API");
            GatewayError::Unavailable {
                description: "storage is unavailable; retry later",
                retry_after_secs: 1,
            }
        }
        StoreError::Corrupt(_) => {
            tracing::error!(error = %err, "corrupt data in storage");
            GatewayError::Internal
        }
    }
}

/// UNIX seconds.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The path's segments, percent-decoded, without the leading and trailing `/`.
fn path_segments(path: &str) -> Result<Vec<String>, GatewayError> {
    let trimmed = path.trim_start_matches('/').trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    trimmed.split('/').map(percent_decode).collect()
}

fn percent_decode(segment: &str) -> Result<String, GatewayError> {
    let invalid = || GatewayError::InvalidInput("path: invalid percent-encoding".to_owned());
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let (Some(&hi), Some(&lo)) = (bytes.get(i + 1), bytes.get(i + 2)) else {
                return Err(invalid());
            };
            // `from_str_radix` alone would also take a sign (`%+1`).
            let digit = |b: u8| char::from(b).to_digit(16).ok_or_else(invalid);
            out.push(u8::try_from(digit(hi)? * 16 + digit(lo)?).map_err(|_| invalid())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| invalid())
}

/// `Authorization: Bearer <admin secret>`, compared in constant time.
fn authorize<B>(gateway: &Gateway, req: &Request<B>) -> Result<(), GatewayError> {
    let Some(admin) = &gateway.settings().admin else {
        return Err(GatewayError::NotFound);
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .unwrap_or("");
    if crate::secrets::secret_eq(presented.as_bytes(), admin.secret.as_bytes()) {
        Ok(())
    } else {
        tracing::warn!(target: crate::logging::SECURITY_TARGET, security = "admin_auth_failed", path = req.uri().path(), "admin API request without the admin secret");
        Err(GatewayError::AdminUnauthorized)
    }
}

fn apis(gateway: &Gateway) -> Response<Body> {
    let runtime = gateway.runtime();
    let list: Vec<serde_json::Value> = runtime
        .config
        .apis
        .iter()
        .map(|api| {
            let upstream = crate::describe_upstream(api);
            serde_json::json!({
                "id": api.id,
                "name": api.name,
                "listen_path": api.listen_path,
                "upstream": upstream,
                "auth": match api.auth.kind { crate::config::AuthType::OAuth2 => "oauth2", crate::config::AuthType::None => "none" },
                "oauth": api.oauth.is_some(),
                "file": api.file.display().to_string(),
            })
        })
        .collect();
    json_response(StatusCode::OK, &serde_json::json!({ "apis": list }))
}

async fn reload(gateway: &Gateway) -> Response<Body> {
    match gateway.reload().await {
        Ok(count) => json_response(
            StatusCode::OK,
            &serde_json::json!({"status": "ok", "apis": count}),
        ),
        Err(errors) => {
            let problems: Vec<String> = errors.0.iter().map(|p| p.to_string()).collect();
            json_response(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({
                    "error": "invalid_configuration",
                    "error_description": "the new configuration was refused; the running one stays",
                    "problems": problems,
                }),
            )
        }
    }
}

/// `tollgate_limiter_storage_errors_total{on_storage_error}`: requests whose limits could not be
/// counted in Redis, by what the API's `on_storage_error` did with them.
/// `tollgate_upstream_target_healthy{api,target}`: 1 while the target may be picked, 0 while an
/// active check holds it down or a passive check has it ejected.
fn render_targets(out: &mut String, gateway: &Gateway) {
    let runtime = gateway.runtime();
    out.push_str("# HELP tollgate_upstream_target_healthy Whether an upstream target receives requests (1) or is held out by a health check (0).\n");
    out.push_str("# TYPE tollgate_upstream_target_healthy gauge\n");
    for api in &runtime.config.apis {
        if let Some(balancer) = runtime
            .route_by_id(&api.id)
            .and_then(|r| r.upstream.as_ref())
        {
            balancer.render_metrics(&api.id, out);
        }
    }
}

/// `GET /apis/{api}/targets`: every target with its health, as this node sees it.
fn targets(gateway: &Gateway, id: &str) -> Result<Response<Body>, GatewayError> {
    let runtime = gateway.runtime();
    let route = runtime
        .route_by_id(id)
        .ok_or_else(|| GatewayError::NoSuchResource(format!("no API with id `{id}`")))?;
    let mut body = match &route.upstream {
        Some(balancer) => balancer.describe(),
        None => serde_json::json!({ "targets": [] }),
    };
    body["api"] = id.into();
    body["balance"] = route.def.upstream.balance.name().into();
    Ok(json_response(StatusCode::OK, &body))
}

fn render_limiter_errors(out: &mut String, limiter: &dyn crate::limits::Limiter) {
    use std::fmt::Write as _;
    let errors = limiter.storage_errors();
    if errors.is_empty() {
        return;
    }
    out.push_str("# HELP tollgate_limiter_storage_errors_total Requests whose limits could not be counted in the shared store, by on_storage_error.\n");
    out.push_str("# TYPE tollgate_limiter_storage_errors_total counter\n");
    for (choice, n) in errors {
        let _ = writeln!(
            out,
            "tollgate_limiter_storage_errors_total{{on_storage_error=\"{choice}\"}} {n}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{path_segments, storage};
    use crate::store::StoreError;
    use http::{StatusCode, header};

    #[test]
    fn unreachable_storage_is_503_with_retry_after() {
        let response = storage(StoreError::Unavailable("timeout".into())).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let corrupt = storage(StoreError::Corrupt("bad json".into()));
        assert_eq!(corrupt.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(path_segments("/").unwrap(), Vec::<String>::new());
        assert_eq!(path_segments("/health/").unwrap(), ["health"]);
        assert_eq!(
            path_segments("/apis/movies/clients/a%2Fb%20c").unwrap(),
            ["apis", "movies", "clients", "a/b c"]
        );
        for bad in ["/a%", "/a%2", "/a%zz", "/a%+1", "/a%ff"] {
            assert!(path_segments(bad).is_err(), "{bad}");
        }
    }
}
