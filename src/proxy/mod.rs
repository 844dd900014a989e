//! The request lifecycle of the proxy listener, in one place.
//!
//! ```text
//! request ─▶ Host check ─▶ gateway endpoints (/health) ─▶ canonical path ─▶ route
//!         ─▶ CORS preflight ─▶ OAuth endpoints of the API ─▶ API rate limit ─▶ credential ─▶ token
//!         ─▶ scopes ─▶ session rate limit + quota ─▶ pick a healthy target ─▶ forward (retry on
//!            another target after a connect error or reset, when safe) or mock
//!         ─▶ CORS headers ─▶ access log + metrics
//! ```
//! Each phase either passes the request on or answers with a `GatewayError`, which `error/mod.rs` turns
//! into the response. Nothing after routing ever looks at a different path than the one routed.
//!
//! May import: `auth`, `oauth`, `limits`, `metrics`, `policy`, `store`, `token`, `server` and below.
//! `gateway.rs` (the running gateway: settings, the hot-reloadable runtime, the authorization server,
//! limiter and metrics) lives here because it is the proxy's state; `admin` reads it from above.

pub mod cors;
pub mod forward;
pub mod gateway;
pub mod headers;
pub mod path;
pub mod tunnel;
pub mod upstream;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::{Request, Response, Version};
use hyper::body::Incoming;
use tracing::Instrument;

use crate::auth;
use crate::config::{ApiDef, AuthType, UpstreamTarget};
use crate::error::GatewayError;
use crate::http_util::{Body, WaitProbe};
use crate::limits;
use crate::metrics::Rejection;
use crate::oauth;
use crate::policy;
use crate::server::ConnInfo;
use crate::store::StoreError;
use crate::token::jwt::TokenError;
use gateway::{ApiRoute, Gateway, Runtime};
use headers::{X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REQUEST_ID};

/// Entry point of the proxy listener: never fails, every outcome is a response.
pub async fn handle(
    gateway: Arc<Gateway>,
    req: Request<Incoming>,
    conn: ConnInfo,
) -> Response<Body> {
    let started = Instant::now();
    let request_id = request_id(&req);
    let span = tracing::info_span!("request", id = %request_id.to_str().unwrap_or_default());
    // Decided once per request: with the access log filtered out (log.level: warn), the path is not
    // copied at all.
    let access_log = tracing::enabled!(target: "tollgate::access", tracing::Level::INFO);
    let method = req.method().clone();
    // The access log prints the path without the query string: credentials may travel there.
    let path = access_log.then(|| req.uri().path().to_owned());
    let runtime = gateway.runtime();
    // For the CORS headers of the answer (a reference count, not a copy).
    let origin = req.headers().get(header::ORIGIN).cloned();

    let mut outcome = Outcome::default();
    // Boxed: hyper moves the handler's future by value once or twice per request, and the lifecycle's
    // state is most of it (two kilobytes). Inline, every one of those moves copies it; boxed, it is
    // copied once into its allocation (docs/benchmarks.md: fewer instructions than the moves cost).
    let result = Box::pin(
        lifecycle(&gateway, &runtime, req, conn, &request_id, &mut outcome)
            .instrument(span.clone()),
    )
    .await;
    let mut response = match result {
        Ok(response) => response,
        Err(err) => {
            if err.status().is_server_error() {
                tracing::warn!(parent: &span, error = %err, "request failed");
            }
            err.into_response()
        }
    };
    // Valid by construction (checked when taken from the client, or generated as hex).
    response.headers_mut().insert(&X_REQUEST_ID, request_id);
    if let Some(cors) = outcome.api.as_ref().and_then(|r| r.def.cors.as_ref()) {
        cors::decorate(cors, origin.as_ref(), response.headers_mut());
    }
    if let Some(headroom) = outcome.headroom
        && response.status().is_success()
    {
        crate::http_util::set_rate_limit_headers(
            response.headers_mut(),
            headroom.limit,
            headroom.remaining,
            headroom.reset_secs,
        );
    }

    let latency = started.elapsed();
    let status = response.status().as_u16();
    let api_id = outcome
        .api
        .as_ref()
        .map(|r| r.def.id.as_str())
        .unwrap_or("");
    let metrics = outcome
        .api
        .as_ref()
        .map(|r| r.metrics.as_ref())
        .unwrap_or(&gateway.metrics.unrouted);
    metrics.count(status);
    metrics.latency.observe(latency);
    metrics.recent.record(crate::clock::now(), status, latency);
    if let Some(upstream) = outcome.upstream_latency {
        metrics.upstream_latency.observe(upstream);
    }
    if access_log {
        tracing::info!(
            target: "tollgate::access",
            parent: &span,
            api = api_id,
            method = %method,
            path = %path.as_deref().unwrap_or_default(),
            status,
            latency_ms = latency.as_secs_f64() * 1000.0,
            upstream_latency_ms = outcome.upstream_latency.map(|d| d.as_secs_f64() * 1000.0),
            "request"
        );
    }
    response
}

/// What the lifecycle learned that the access log and metrics need after it returns.
#[derive(Default)]
struct Outcome {
    api: Option<Arc<ApiRoute>>,
    upstream_latency: Option<Duration>,
    /// What is left of the limit that applied, for `X-RateLimit-*` on a successful response.
    headroom: Option<limits::Headroom>,
}

async fn lifecycle(
    gateway: &Gateway,
    runtime: &Runtime,
    req: Request<Incoming>,
    conn: ConnInfo,
    request_id: &HeaderValue,
    outcome: &mut Outcome,
) -> Result<Response<Body>, GatewayError> {
    // 1. Host: hyper parses HTTP/1 framing strictly, but leaves Host rules to us. `/health` is
    // exempt from `allowed_hosts`: load balancers probe it by address, not by name.
    check_host(&req)?;
    if let Some(allowed) = &runtime.config.allowed_hosts
        && req.uri().path() != "/health"
    {
        check_allowed_host(&req, allowed)?;
    }

    // 2. Endpoints of the gateway itself, outside every listen path.
    match req.uri().path() {
        // Boxed for the same reason as the OAuth endpoints below: rare, and not small with Redis.
        "/health" => return Ok(Box::pin(gateway.health_response(false)).await),
        "/.well-known/jwks.json" => return Ok(oauth::handlers::jwks(&gateway.auth)),
        _ => {}
    }

    // RFC 8414 §3: metadata of the API whose listen path follows the well-known prefix.
    if let Some(lp) = req
        .uri()
        .path()
        .strip_prefix("/.well-known/oauth-authorization-server/")
    {
        let lp = format!("/{}/", lp.trim_end_matches('/'));
        if let Some(api) = runtime
            .config
            .apis
            .iter()
            .find(|a| a.listen_path == lp && a.oauth.is_some())
        {
            return Ok(oauth::handlers::metadata_response(&gateway.auth, api));
        }
        return Err(GatewayError::NotFound);
    }
    // OIDC Discovery §4 for an issuer with a path, in the RFC 8414 style.
    if let Some(lp) = req
        .uri()
        .path()
        .strip_prefix("/.well-known/openid-configuration/")
    {
        let lp = format!("/{}/", lp.trim_end_matches('/'));
        if let Some(api) = runtime
            .config
            .apis
            .iter()
            .find(|a| a.listen_path == lp && a.oauth.as_ref().is_some_and(|o| o.openid))
        {
            return Ok(oauth::oidc_handlers::discovery_response(&gateway.auth, api));
        }
        return Err(GatewayError::NotFound);
    }

    // 3. One canonical path (unreserved characters decoded), checked before routing; it is also
    // the path that is forwarded. The `Uri` clone is a reference count: the path may borrow from it
    // while the request itself is changed below.
    let uri = req.uri().clone();
    let path = path::canonical(uri.path()).map_err(GatewayError::BadRequest)?;

    // 4. Route by listen path; a `;` must be allowed by the API and must not change the route.
    let route = runtime
        .router
        .route(&path)
        .cloned()
        .ok_or(GatewayError::NotFound)?;
    outcome.api = Some(route.clone());
    path::check_semicolons(&runtime.router, &path, &route, route.def.allow_semicolons)
        .map_err(GatewayError::BadRequest)?;
    let api = &route.def;

    // 4b. A CORS preflight is answered here, before the OAuth endpoints, credentials and limits:
    // browsers send it without credentials. The CORS headers of every answer are set in `handle`.
    if let Some(cors) = &api.cors
        && let Some(response) = cors::preflight(cors, &req)
    {
        return Ok(response);
    }

    // 5. The API's own OAuth endpoints ({lp}oauth/token, ...), when it is an authorization server.
    if api.oauth.is_some()
        && let Some(endpoint) = path
            .get(api.listen_path.len()..)
            .and_then(oauth::handlers::Endpoint::from_rest)
            .filter(|endpoint| endpoint.served_by(api))
    {
        // Boxed: the OAuth handlers' futures (authorize with its login page, the token grants) are
        // several kilobytes, and hyper keeps one handler future per connection for as long as the
        // connection lives. Inline, every keep-alive connection would carry that size even when it
        // only ever proxies; boxed, only a request to these endpoints pays one allocation.
        let ctx = oauth::Ctx {
            auth: &gateway.auth,
            config: &runtime.config,
            settings: gateway.settings(),
            client_ip: headers::client_ip(
                req.headers(),
                conn.peer.ip(),
                &runtime.config.trusted_proxies,
            ),
        };
        return Box::pin(oauth::handlers::handle(&ctx, api, endpoint, req)).await;
    }

    let now = crate::clock::now();
    let mut req = req;
    // The token claim that `balance: hash` hashes on, when it does (set in step 8).
    let mut hash_claim: Option<HeaderValue> = None;
    // A WebSocket upgrade to an API that allows them: the client's side of the future tunnel is taken
    // now, and the request goes through every step below like any other.
    let websocket = (api.upstream.websockets && tunnel::is_websocket_upgrade(&req))
        .then(|| hyper::upgrade::on(&mut req));

    // 6. Whole-API rate limit, before any token work, so a flood is cheap to refuse.
    if let Some(global) = &api.global_rate_limit {
        let decision = gateway
            .limiter
            .check(&format!("api:{}", api.id), Some(global), None, now)
            .await
            .map_err(storage_unavailable)?;
        refuse_if_limited(gateway, api, &decision)?;
        // Reported on success unless a session limit below replaces it.
        outcome.headroom = decision.headline();
    }

    // Headers named in forward_claims are ours to set, and forwarding claims are only believed from
    // trusted proxies: client-sent copies never pass, in any spelling (`X_User_Id`).
    let peer_trusted = runtime
        .config
        .trusted_proxies
        .iter()
        .any(|c| c.contains(conn.peer.ip()));
    headers::drop_spoofable(req.headers_mut(), &api.auth.forward_claims, peer_trusted);

    if api.auth.kind == AuthType::OAuth2 {
        // 7. Credential: header, then query, then cookie.
        let Some((token, source)) = auth::extract(&req, &api.auth)? else {
            gateway.metrics.reject(&api.id, Rejection::NoCredential);
            return Err(GatewayError::Unauthorized {
                realm: api.id.clone(),
                invalid_token: false,
                description: "an access token is required".into(),
            });
        };

        // 8. Token: signature (cached), then the claims that can change on every request.
        let mut claims = auth::verified(&gateway.auth.tokens, &token)
            .map_err(|err| invalid_token(gateway, api, &err))?;
        // The client's policy as it is now (policies.yaml, else the stored-policy cache): a policy
        // changed a moment ago applies to this request. A policy that no longer exists leaves the
        // client on this API's defaults.
        let policy_id = policy::client_policy_id(
            &runtime.config,
            gateway.auth.store.as_ref(),
            &claims.aud,
            &claims.client_id,
        )
        .await
        .map_err(storage_unavailable)?;
        let policy = policy::resolve(
            &runtime.config.policies,
            &gateway.auth.policies,
            policy_id.as_deref(),
        )
        .await
        .map_err(storage_unavailable)?;
        let policy = policy.as_deref();
        let granted = policy::grants(policy, &api.id, &claims);
        auth::check(
            &gateway.auth.tokens,
            gateway.auth.store.as_ref(),
            &runtime.config,
            api,
            &claims,
            granted,
            now,
        )
        .map_err(|err| invalid_token(gateway, api, &err))?;
        // A policy whose `scopes` were narrowed after the token was issued narrows the token now:
        // for the scope check below and for a forwarded `scope` claim alike.
        if let Some(scope) = policy::narrowed_scope(&claims.scope, policy) {
            let mut narrowed = (*claims).clone();
            narrowed.scope = scope;
            claims = Arc::new(narrowed);
        }

        if let Some(claim) = route.upstream.as_ref().and_then(|b| b.hash_claim()) {
            hash_claim = auth::claim_value(&claims, claim);
        }

        // 9. Required scopes.
        if let Some(missing) = api
            .auth
            .required_scopes
            .iter()
            .find(|needed| !claims.scopes().any(|s| s == needed.as_str()))
        {
            gateway.metrics.reject(&api.id, Rejection::Scope);
            return Err(GatewayError::InsufficientScope {
                realm: api.id.clone(),
                scope: missing.clone(),
            });
        }

        // 10–11. Session rate limit and quota: the client's policy overrides the API's.
        let limits = limits::SessionLimits::resolve(policy, api, &claims.sid);
        if limits.rate.is_some() || limits.quota.is_some() {
            let decision = gateway
                .limiter
                .check(
                    &limits.key,
                    limits.rate.as_ref(),
                    limits.quota.as_ref(),
                    now,
                )
                .await
                .map_err(storage_unavailable)?;
            refuse_if_limited(gateway, api, &decision)?;
            outcome.headroom = decision.headline();
        }

        if api.auth.strip_credentials {
            // Never forward a credential we failed to remove: 500 rather than a leak upstream.
            auth::strip(&mut req, &api.auth, source).map_err(|_| GatewayError::Internal)?;
        }
        // Hop-by-hop removal must come before our headers are set (it runs again, harmlessly, when
        // forwarding), so a client's `Connection: X-User-Id` cannot remove a forwarded claim.
        headers::strip_hop_by_hop(req.headers_mut());
        for (header_name, claim) in &api.auth.forward_claims {
            if let Some(value) = auth::claim_value(&claims, claim) {
                req.headers_mut().insert(header_name, value);
            }
        }
    }

    // 12. Forward to a target, or answer from the mock.
    match &api.upstream.target {
        UpstreamTarget::Mock(mock) => {
            // The body is not read, but it still must respect the limit the operator set.
            reject_oversized(&req, runtime.client.max_body_bytes())?;
            Ok(forward::mock_response(mock))
        }
        UpstreamTarget::Targets(_) => {
            let balancer = route.upstream.as_ref().ok_or(GatewayError::Internal)?;
            let claim = hash_claim.as_ref().map(HeaderValue::as_bytes);
            if let Some(client_side) = websocket {
                return Box::pin(open_tunnel(
                    gateway,
                    runtime,
                    api,
                    balancer,
                    req,
                    &path,
                    conn,
                    request_id,
                    claim,
                    client_side,
                ))
                .await;
            }
            let (response, upstream_latency) =
                forward_to_targets(runtime, api, balancer, req, &path, conn, request_id, claim)
                    .await?;
            outcome.upstream_latency = Some(upstream_latency);
            Ok(response)
        }
    }
}

/// Step 12: the balancer picks a healthy target (none → 503 + `Retry-After`); a connect error or a
/// reset before any response byte moves the request to another healthy target, up to
/// `upstream.retries` times, but only when sending it again cannot repeat its effect: nothing was
/// sent (connect error), or the method is idempotent and the body was not started. No request body
/// is kept for this: a request whose body began to stream is never sent twice.
#[allow(clippy::too_many_arguments)]
async fn forward_to_targets(
    runtime: &Runtime,
    api: &ApiDef,
    balancer: &upstream::Balancer,
    req: Request<Incoming>,
    path: &str,
    conn: ConnInfo,
    request_id: &HeaderValue,
    claim: Option<&[u8]>,
) -> Result<(Response<Body>, Duration), GatewayError> {
    let key = balancer.hash_key(&req, conn.peer.ip(), &runtime.config.trusted_proxies, claim);
    let index = balancer
        .pick(key, 0)
        .ok_or_else(|| no_healthy_target(api, balancer))?;
    let target = &balancer.targets[index];
    let uri = target_uri(api, path, target, req.uri().query())?;
    let preserve_host = api.upstream.preserve_host;
    let req = rewrite_request_headers(
        req,
        runtime,
        conn,
        request_id,
        preserve_host,
        target.host.as_ref(),
    )?;
    let (req, client_body) = target.client.prepare(req)?;
    let timeout = api.upstream.timeout;

    if balancer.targets.len() == 1 || api.upstream.retries == 0 {
        // Nowhere else to go: the request as it is, without keeping anything for a second send.
        let result = target
            .client
            .attempt(
                req,
                uri,
                timeout,
                &client_body,
                &api.id,
                target.health.start(),
            )
            .await;
        observe(balancer, target, &result);
        return result.map_err(|failure| failure.error);
    }
    // Boxed: the loop's state (the request head kept for each attempt, the shared body) would
    // otherwise grow every request's future, retries or not, and hyper copies that future once per
    // request.
    Box::pin(forward_with_retries(
        api,
        balancer,
        key,
        index,
        req,
        uri,
        client_body,
        path,
    ))
    .await
}

/// Step 12 when another target may be tried: see [`forward_to_targets`].
#[allow(clippy::too_many_arguments)]
async fn forward_with_retries(
    api: &ApiDef,
    balancer: &upstream::Balancer,
    key: u64,
    mut index: usize,
    req: Request<Body>,
    mut uri: http::Uri,
    client_body: WaitProbe,
    path: &str,
) -> Result<(Response<Body>, Duration), GatewayError> {
    let preserve_host = api.upstream.preserve_host;
    let timeout = api.upstream.timeout;
    let idempotent = is_idempotent(req.method());
    let (head, body) = req.into_parts();
    let mut body = forward::Replayable::new(body);
    let mut tried = 0u64;
    let mut retries_left = api.upstream.retries;
    loop {
        let target = &balancer.targets[index];
        tried |= 1 << index;
        let mut attempt = Request::new(body.take());
        *attempt.method_mut() = head.method.clone();
        *attempt.headers_mut() = head.headers.clone();
        if !preserve_host && let Some(host) = &target.host {
            attempt.headers_mut().insert(header::HOST, host.clone());
        }
        let result = target
            .client
            .attempt(
                attempt,
                uri,
                timeout,
                &client_body,
                &api.id,
                target.health.start(),
            )
            .await;
        observe(balancer, target, &result);
        let failure = match result {
            Ok(answer) => return Ok(answer),
            Err(failure) => failure,
        };
        let resend_is_safe = match failure.upstream {
            Some(forward::UpstreamFault::Connect) => body.intact(),
            Some(forward::UpstreamFault::Reset) => idempotent && body.intact(),
            None => false,
        };
        if !resend_is_safe || retries_left == 0 {
            return Err(failure.error);
        }
        let Some(next) = balancer.pick(key, tried) else {
            return Err(failure.error);
        };
        retries_left -= 1;
        index = next;
        uri = target_uri(api, path, &balancer.targets[index], head.uri.query())?;
        tracing::info!(api = %api.id, from = %target.name, to = %balancer.targets[index].name, "retrying on another upstream target");
    }
}

/// The URI of `path` (the canonical path routed to `api`) at `target`.
fn target_uri(
    api: &ApiDef,
    path: &str,
    target: &upstream::Target,
    query: Option<&str>,
) -> Result<http::Uri, GatewayError> {
    let target_path = path::upstream_target(
        path,
        &api.listen_path,
        api.strip_listen_path,
        &target.def.path_prefix,
        query,
    );
    forward::upstream_uri(&target.def.uri, target_path)
}

/// Step 12 for a WebSocket upgrade: one attempt at a healthy target with `Connection: upgrade` and
/// `Upgrade: websocket` put back; on its 101 the two connections are joined in a tunnel task, any
/// other answer is passed on as it is. Boxed by the caller: rare, and it would grow every request's
/// future.
#[allow(clippy::too_many_arguments)]
async fn open_tunnel(
    gateway: &Gateway,
    runtime: &Runtime,
    api: &ApiDef,
    balancer: &upstream::Balancer,
    req: Request<Incoming>,
    path: &str,
    conn: ConnInfo,
    request_id: &HeaderValue,
    claim: Option<&[u8]>,
    client_side: hyper::upgrade::OnUpgrade,
) -> Result<Response<Body>, GatewayError> {
    let slot = gateway.tunnels.reserve().ok_or(GatewayError::Unavailable {
        description: "too many open WebSocket tunnels; retry later",
        retry_after_secs: 1,
    })?;
    let key = balancer.hash_key(&req, conn.peer.ip(), &runtime.config.trusted_proxies, claim);
    let index = balancer
        .pick(key, 0)
        .ok_or_else(|| no_healthy_target(api, balancer))?;
    let target = &balancer.targets[index];
    let uri = target_uri(api, path, target, req.uri().query())?;
    let mut req = rewrite_request_headers(
        req,
        runtime,
        conn,
        request_id,
        api.upstream.preserve_host,
        target.host.as_ref(),
    )?;
    tunnel::restore_upgrade_headers(req.headers_mut());
    let (req, client_body) = target.client.prepare(req)?;
    let result = target
        .client
        .attempt(
            req,
            uri,
            api.upstream.timeout,
            &client_body,
            &api.id,
            target.health.start(),
        )
        .await;
    observe(balancer, target, &result);
    let (mut response, _) = result.map_err(|failure| failure.error)?;
    if tunnel::is_switching(response.status()) {
        let upstream_side = hyper::upgrade::on(&mut response);
        tunnel::restore_upgrade_headers(response.headers_mut());
        let limits = &runtime.config.limits;
        tunnel::spawn(
            client_side,
            upstream_side,
            slot,
            tunnel::TunnelSettings {
                idle: limits.tunnel_idle_timeout,
                grace: limits.shutdown_grace,
                shutdown: gateway.shutdown_signal(),
                api: api.id.clone(),
            },
        );
    }
    Ok(response)
}

/// Passive health: connect errors, resets and 5xx answers count against the target.
fn observe(
    balancer: &upstream::Balancer,
    target: &upstream::Target,
    result: &Result<(Response<Body>, Duration), forward::Failure>,
) {
    let failed = match result {
        Ok((response, _)) => response.status().is_server_error(),
        Err(failure) => failure.upstream.is_some(),
    };
    target
        .health
        .observe(failed, balancer.passive(), &target.name);
}

fn no_healthy_target(api: &ApiDef, balancer: &upstream::Balancer) -> GatewayError {
    tracing::warn!(api = %api.id, "no healthy upstream target");
    GatewayError::Unavailable {
        description: "no healthy upstream target; retry later",
        retry_after_secs: balancer.retry_after_secs(),
    }
}

/// RFC 9110 §9.2.2.
fn is_idempotent(method: &http::Method) -> bool {
    use http::Method;
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ]
    .contains(method)
}

fn invalid_token(gateway: &Gateway, api: &ApiDef, err: &TokenError) -> GatewayError {
    gateway.metrics.reject(&api.id, Rejection::InvalidToken);
    GatewayError::Unauthorized {
        realm: api.id.clone(),
        invalid_token: true,
        description: err.to_string(),
    }
}

fn storage_unavailable(err: StoreError) -> GatewayError {
    tracing::warn!(error = %err, "storage unavailable on the proxy path");
    GatewayError::Unavailable {
        description: "storage is unavailable; retry later",
        retry_after_secs: 1,
    }
}

/// 429 with `Retry-After` and `X-RateLimit-*` when a rate limit or quota refused the request.
fn refuse_if_limited(
    gateway: &Gateway,
    api: &ApiDef,
    decision: &limits::Decision,
) -> Result<(), GatewayError> {
    let Some(refused) = decision.refused else {
        return Ok(());
    };
    let (why, description, retry_after_secs, headroom) = match refused {
        limits::Refused::RateLimit { retry_after_secs } => (
            Rejection::RateLimit,
            "rate limit exceeded",
            retry_after_secs,
            decision.rate,
        ),
        limits::Refused::Quota { retry_after_secs } => (
            Rejection::Quota,
            "quota exceeded",
            retry_after_secs,
            decision.quota,
        ),
    };
    gateway.metrics.reject(&api.id, why);
    let headroom = headroom.unwrap_or(limits::Headroom {
        limit: 0,
        remaining: 0,
        reset_secs: retry_after_secs,
    });
    Err(GatewayError::TooManyRequests {
        description,
        limit: headroom.limit,
        remaining: 0,
        reset_secs: headroom.reset_secs,
        retry_after_secs,
    })
}

/// 421 unless every host the request names (`Host`, and the authority of an absolute-form or HTTP/2
/// request) is in `allowed_hosts`; 400 when there is none or one is malformed.
fn check_allowed_host<B>(
    req: &Request<B>,
    allowed: &[crate::config::HostPattern],
) -> Result<(), GatewayError> {
    let header_hosts = req
        .headers()
        .get_all(header::HOST)
        .iter()
        .map(|v| v.to_str().ok());
    let uri_host = req.uri().authority().map(|a| Some(a.as_str()));
    let mut named = false;
    for host in header_hosts.chain(uri_host) {
        let host = host
            .and_then(headers::host_name)
            .ok_or(GatewayError::BadRequest("the Host header is malformed"))?;
        if !allowed.iter().any(|pattern| pattern.matches(host)) {
            return Err(GatewayError::MisdirectedRequest);
        }
        named = true;
    }
    if named {
        Ok(())
    } else {
        Err(GatewayError::BadRequest("the Host header is missing"))
    }
}

/// Refuses requests whose Host is missing or ambiguous (RFC 9112 §3.2).
fn check_host<B>(req: &Request<B>) -> Result<(), GatewayError> {
    // Transfer-Encoding with Content-Length never gets here as such: hyper keeps chunked, drops
    // Content-Length and closes the connection after the response, so nothing can hide behind it.
    let headers = req.headers();
    if req.version() == Version::HTTP_11 {
        let mut hosts = headers.get_all(header::HOST).iter();
        match (hosts.next(), hosts.next()) {
            (Some(_), None) => {}
            (None, _) => return Err(GatewayError::BadRequest("the Host header is missing")),
            (Some(_), Some(_)) => {
                return Err(GatewayError::BadRequest("more than one Host header"));
            }
        }
    }
    Ok(())
}

fn reject_oversized<B>(req: &Request<B>, limit: u64) -> Result<(), GatewayError> {
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match length {
        Some(length) if length > limit => Err(GatewayError::PayloadTooLarge { limit }),
        _ => Ok(()),
    }
}

/// Hop-by-hop removal first, then the headers we own; `Host` set for the upstream.
fn rewrite_request_headers(
    mut req: Request<Incoming>,
    runtime: &Runtime,
    conn: ConnInfo,
    request_id: &HeaderValue,
    preserve_host: bool,
    upstream_host: Option<&HeaderValue>,
) -> Result<Request<Incoming>, GatewayError> {
    let incoming_host = req.headers().get(header::HOST).cloned().or_else(|| {
        req.uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let peer_trusted = runtime
        .config
        .trusted_proxies
        .iter()
        .any(|c| c.contains(conn.peer.ip()));
    let xff = headers::forwarded_for(req.headers(), conn.peer.ip(), peer_trusted);
    let headers = req.headers_mut();
    headers::strip_hop_by_hop(headers);
    // An untrusted peer's claims about earlier hops are gone already (`drop_spoofable`), so what
    // is left of X-Forwarded-Proto/-Host came from a trusted proxy; from anyone else they are known
    // to be absent, and looking them up (a hash and a probe each) is skipped.
    headers.insert(&X_FORWARDED_FOR, xff);
    if !peer_trusted || !headers.contains_key(&X_FORWARDED_PROTO) {
        let proto = if conn.tls { "https" } else { "http" };
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if let Some(host) = &incoming_host
        && (!peer_trusted || !headers.contains_key(&X_FORWARDED_HOST))
    {
        headers.insert(&X_FORWARDED_HOST, host.clone());
    }
    headers.insert(&X_REQUEST_ID, request_id.clone());
    let host = if preserve_host {
        incoming_host
    } else {
        upstream_host.cloned()
    };
    match host {
        Some(host) => {
            headers.insert(header::HOST, host);
        }
        None => return Err(GatewayError::BadRequest("the Host header is missing")),
    }
    Ok(req)
}

/// 128 random-looking bits for a request id. An id only needs to be unique, not secret, and drawing
/// it from the CSPRNG cost ~2,800 instructions a request (4.5 % of the plain path, callgrind in
/// docs/benchmarks.md). So each thread seeds a SplitMix64 sequence from the CSPRNG once and steps it:
/// a bijection of a counter, so a thread never repeats an id within 2^64 of them, and threads start
/// at independent random points.
fn fresh_request_id() -> Option<[u8; 16]> {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<Option<u64>> = const { Cell::new(None) };
    }
    fn next(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    STATE.with(|cell| {
        let mut state = match cell.get() {
            Some(state) => state,
            None => {
                let mut seed = [0u8; 8];
                aws_lc_rs::rand::fill(&mut seed).ok()?;
                u64::from_le_bytes(seed)
            }
        };
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&next(&mut state).to_le_bytes());
        bytes[8..].copy_from_slice(&next(&mut state).to_le_bytes());
        cell.set(Some(state));
        Some(bytes)
    })
}

fn request_id<B>(req: &Request<B>) -> HeaderValue {
    if let Some(value) = req.headers().get(&X_REQUEST_ID)
        && headers::valid_request_id(value)
    {
        return value.clone();
    }
    let Some(bytes) = fresh_request_id() else {
        return HeaderValue::from_static("unknown");
    };
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 32];
    for (i, b) in bytes.iter().enumerate() {
        text[2 * i] = HEX[usize::from(b >> 4)];
        text[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
    HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// Made ids are 32 hex digits and do not repeat, on one thread or across threads (each seeds
    /// its own sequence from the CSPRNG).
    #[test]
    fn made_request_ids_are_hex_and_unique() {
        let make = || {
            (0..10_000)
                .map(|_| {
                    let req = Request::new(());
                    request_id(&req).to_str().unwrap().to_owned()
                })
                .collect::<Vec<_>>()
        };
        let other = std::thread::spawn(make);
        let mut seen = HashSet::new();
        for id in make().into_iter().chain(other.join().unwrap()) {
            assert_eq!(id.len(), 32, "{id}");
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
            assert!(seen.insert(id.clone()), "repeated: {id}");
        }
    }
}
