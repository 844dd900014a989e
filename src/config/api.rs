//! One API definition file: raw → `ApiDef`. Checks that need other files (unique ids and listen
//! paths, `accept_from`, client policies) are done by the loader once everything is read.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, StatusCode, Uri};

use super::check;
use super::error::{FileProblems, field, index};
use super::gateway::duration;
use super::model::{
    ActiveCheck, ApiDef, AuthConfig, AuthType, Balance, ClientDef, CorsConfig, GrantType, HashOn,
    HeaderSource, HealthCheck, LoginMode, MockResponse, Notifications, OAuthConfig, OnStorageError,
    PassiveCheck, PkceMode, Quota, RateLimit, TargetDef, Upstream, UpstreamTarget,
};
use super::raw::{
    RawApi, RawAuth, RawClaims, RawClient, RawCors, RawHealthCheck, RawLogin, RawMock, RawOAuth,
    RawQuota, RawRateLimit, RawTarget, RawUpstream,
};

/// `stem` is the file name without extension (the default id).
pub(crate) fn convert(raw: RawApi, file: &Path, stem: &str, out: &mut FileProblems<'_>) -> ApiDef {
    let id = match raw.id {
        Some(id) => {
            let _ = out.check("id", check::api_id(&id));
            id
        }
        None => {
            if let Err(message) = check::api_id(stem) {
                out.push(
                    "id",
                    format!("{message} (the id defaults to the file name; set `id`)"),
                );
            }
            stem.to_owned()
        }
    };
    let _ = out.check("listen_path", check::listen_path(&raw.listen_path));

    let oauth = raw.oauth.map(|o| oauth(o, out));
    ApiDef {
        name: raw.name.unwrap_or_else(|| id.clone()),
        id,
        listen_path: raw.listen_path,
        strip_listen_path: raw.strip_listen_path,
        allow_semicolons: raw.allow_semicolons,
        upstream: upstream(&raw.upstream, out),
        auth: auth(raw.auth, out),
        oauth,
        rate_limit: raw.rate_limit.map(|r| rate_limit(&r, "rate_limit", out)),
        quota: raw.quota.map(|q| quota(&q, "quota", out)),
        global_rate_limit: raw
            .global_rate_limit
            .map(|r| rate_limit(&r, "global_rate_limit", out)),
        cors: raw.cors.as_ref().map(|c| cors(c, out)),
        file: file.to_owned(),
    }
}

fn upstream(raw: &RawUpstream, out: &mut FileProblems<'_>) -> Upstream {
    let target = match (&raw.url, &raw.targets, &raw.mock) {
        (Some(url), None, None) => match target(url, 1, "upstream.url", out) {
            Some(t) => UpstreamTarget::Targets(vec![t]),
            None => placeholder_target(),
        },
        (None, Some(list), None) => targets(list, out),
        (None, None, Some(mock)) => UpstreamTarget::Mock(mock_response(mock, out)),
        (None, None, None) => {
            out.push("upstream", "set exactly one of url, targets or mock");
            placeholder_target()
        }
        _ => {
            out.push(
                "upstream",
                "set exactly one of url, targets or mock, not several",
            );
            placeholder_target()
        }
    };
    let is_mock = matches!(target, UpstreamTarget::Mock(_));
    let balance = balance(raw, out);
    let health_check = raw
        .health_check
        .as_ref()
        .map(|h| health_check(h, out))
        .unwrap_or_default();
    let retries = raw.retries.unwrap_or(DEFAULT_RETRIES);
    if retries > MAX_RETRIES {
        out.push(
            "upstream.retries",
            format!("at most {MAX_RETRIES} (each retry goes to another target)"),
        );
    }
    if is_mock
        && (raw.balance.is_some()
            || raw.hash_on.is_some()
            || raw.health_check.is_some()
            || raw.retries.is_some()
            || raw.websockets)
    {
        out.push(
            "upstream",
            "balance, hash_on, health_check, retries and websockets need url or targets, not mock",
        );
    }
    Upstream {
        target,
        preserve_host: raw.preserve_host,
        timeout: raw
            .timeout
            .as_ref()
            .map(|t| duration(out, "upstream.timeout", t, Duration::from_secs(30))),
        balance,
        health_check,
        retries,
        websockets: raw.websockets,
    }
}

/// Retries when `upstream.retries` is absent: a connect error on one target costs the client
/// nothing when another is healthy. With a single target there is nowhere to retry, so this
/// changes nothing for APIs with `url`.
const DEFAULT_RETRIES: u32 = 1;
const MAX_RETRIES: u32 = 10;
/// Targets of one API: the balancer keeps the tried ones in a 64-bit mask.
pub const MAX_TARGETS: usize = 64;
const MAX_WEIGHT: u32 = 1000;

fn targets(list: &[RawTarget], out: &mut FileProblems<'_>) -> UpstreamTarget {
    if list.is_empty() {
        out.push("upstream.targets", "at least one target is required");
        return placeholder_target();
    }
    if list.len() > MAX_TARGETS {
        out.push(
            "upstream.targets",
            format!("at most {MAX_TARGETS} targets per API"),
        );
        return placeholder_target();
    }
    let mut defs: Vec<TargetDef> = Vec::with_capacity(list.len());
    for (i, raw) in list.iter().enumerate() {
        let path = index("upstream.targets", i);
        let Some(def) = target(&raw.url, raw.weight, &field(&path, "url"), out) else {
            continue;
        };
        if !(1..=MAX_WEIGHT).contains(&raw.weight) {
            out.push(
                &field(&path, "weight"),
                format!("must be from 1 to {MAX_WEIGHT}"),
            );
        }
        if let Some(first) = defs.first()
            && first.uri.scheme() != def.uri.scheme()
        {
            out.push(
                &field(&path, "url"),
                "every target must use the scheme of the first one",
            );
        }
        if let Some(j) = defs.iter().position(|d| d.name() == def.name()) {
            out.push(
                &field(&path, "url"),
                format!("duplicate target (first at upstream.targets[{j}])"),
            );
            continue;
        }
        defs.push(def);
    }
    if defs.is_empty() {
        return placeholder_target();
    }
    UpstreamTarget::Targets(defs)
}

fn balance(raw: &RawUpstream, out: &mut FileProblems<'_>) -> Balance {
    let hash_on = raw.hash_on.as_ref().map(|v| hash_on(v, out));
    let balance = match raw.balance.as_deref() {
        None | Some("round_robin") => Balance::RoundRobin,
        Some("least_connections") => Balance::LeastConnections,
        Some("hash") => return Balance::Hash(hash_on.flatten().unwrap_or(HashOn::ClientIp)),
        Some(other) => {
            out.push(
                "upstream.balance",
                format!(
                    "unknown balance `{other}` (expected round_robin, least_connections or hash)"
                ),
            );
            Balance::RoundRobin
        }
    };
    if hash_on.is_some() {
        out.push("upstream.hash_on", "only applies with balance: hash");
    }
    balance
}

fn hash_on(value: &serde_json::Value, out: &mut FileProblems<'_>) -> Option<HashOn> {
    const EXPECTED: &str = "expected client_ip, {header: NAME} or {claim: NAME}";
    match value {
        serde_json::Value::String(s) if s == "client_ip" => Some(HashOn::ClientIp),
        serde_json::Value::Object(map) if map.len() == 1 => {
            let (key, value) = map.iter().next()?;
            let Some(name) = value.as_str() else {
                out.push(&field("upstream.hash_on", key), "must be a string");
                return None;
            };
            match key.as_str() {
                "header" => out
                    .check("upstream.hash_on.header", check::header_name(name))
                    .map(HashOn::Header),
                // Any claim, the registered ones (`sub`) included: this only reads it.
                "claim" if !name.is_empty() => Some(HashOn::Claim(name.to_owned())),
                "claim" => {
                    out.push("upstream.hash_on.claim", "must not be empty");
                    None
                }
                _ => {
                    out.push("upstream.hash_on", EXPECTED);
                    None
                }
            }
        }
        _ => {
            out.push("upstream.hash_on", EXPECTED);
            None
        }
    }
}

fn health_check(raw: &RawHealthCheck, out: &mut FileProblems<'_>) -> HealthCheck {
    let threshold = |out: &mut FileProblems<'_>, path: &str, value: Option<u32>, default: u32| {
        let value = value.unwrap_or(default);
        if !(1..=100).contains(&value) {
            out.push(path, "must be from 1 to 100");
        }
        value.clamp(1, 100)
    };
    let active = raw.active.as_ref().map(|a| {
        let path = a.path.clone().unwrap_or_else(|| "/health".to_owned());
        if !path.starts_with('/') || http::uri::PathAndQuery::try_from(path.as_str()).is_err() {
            out.push(
                "upstream.health_check.active.path",
                "must be a path starting with `/`",
            );
        }
        let interval = a.interval.as_ref().map_or(Duration::from_secs(5), |d| {
            duration(
                out,
                "upstream.health_check.active.interval",
                d,
                Duration::from_secs(5),
            )
        });
        let timeout = a.timeout.as_ref().map_or(Duration::from_secs(1), |d| {
            duration(
                out,
                "upstream.health_check.active.timeout",
                d,
                Duration::from_secs(1),
            )
        });
        if timeout > interval {
            out.push(
                "upstream.health_check.active.timeout",
                "must not be longer than the interval",
            );
        }
        ActiveCheck {
            path,
            interval,
            timeout,
            healthy_after: threshold(
                out,
                "upstream.health_check.active.healthy_after",
                a.healthy_after,
                2,
            ),
            unhealthy_after: threshold(
                out,
                "upstream.health_check.active.unhealthy_after",
                a.unhealthy_after,
                2,
            ),
        }
    });
    let passive = raw.passive.as_ref().map(|p| PassiveCheck {
        unhealthy_after: threshold(
            out,
            "upstream.health_check.passive.unhealthy_after",
            p.unhealthy_after,
            3,
        ),
        eject_for: p.eject_for.as_ref().map_or(Duration::from_secs(30), |d| {
            duration(
                out,
                "upstream.health_check.passive.eject_for",
                d,
                Duration::from_secs(30),
            )
        }),
    });
    HealthCheck { active, passive }
}

/// Stands in for an upstream that failed validation; never leaves the loader, which returns errors.
fn placeholder_target() -> UpstreamTarget {
    UpstreamTarget::Mock(MockResponse {
        status: StatusCode::BAD_GATEWAY,
        headers: HeaderMap::new(),
        body: Bytes::new(),
    })
}

fn target(url: &str, weight: u32, path: &str, out: &mut FileProblems<'_>) -> Option<TargetDef> {
    let uri = out.check(path, check::http_url(url, false))?;
    let path_prefix = uri.path().trim_end_matches('/').to_owned();
    let mut parts = uri.into_parts();
    parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    match Uri::from_parts(parts) {
        Ok(uri) => Some(TargetDef {
            uri,
            path_prefix,
            weight,
        }),
        Err(_) => {
            out.push(path, check::HTTP_URL);
            None
        }
    }
}

/// Preflight answers are cached this long by default (browsers cap it: Chromium at 2 h).
const DEFAULT_CORS_MAX_AGE: Duration = Duration::from_secs(600);

fn cors(raw: &RawCors, out: &mut FileProblems<'_>) -> CorsConfig {
    let mut origins = Vec::with_capacity(raw.allowed_origins.len());
    let mut any = false;
    if raw.allowed_origins.is_empty() {
        out.push("cors.allowed_origins", "at least one origin is required");
    }
    for (i, origin) in raw.allowed_origins.iter().enumerate() {
        let path = index("cors.allowed_origins", i);
        if origin == "*" {
            any = true;
            if raw.allow_credentials {
                out.push(
                    &path,
                    "`*` is not allowed with allow_credentials: true (browsers refuse it); list the origins",
                );
            }
            continue;
        }
        if let Some(origin) = out.check(&path, check::origin(origin)) {
            origins.push(origin);
        }
    }
    let list = |out: &mut FileProblems<'_>, path: &str, items: &[String], method: bool| {
        for (i, item) in items.iter().enumerate() {
            let ok = if method {
                http::Method::from_bytes(item.as_bytes()).is_ok()
            } else {
                check::header_name(item).is_ok()
            };
            if !ok {
                out.push(
                    &index(path, i),
                    format!(
                        "`{item}` is not a valid {}",
                        if method { "method" } else { "header name" }
                    ),
                );
            }
        }
        HeaderValue::from_str(&items.join(", ")).unwrap_or(HeaderValue::from_static(""))
    };
    let default_methods = ["GET", "HEAD", "POST"].map(String::from);
    let default_headers = ["Authorization", "Content-Type"].map(String::from);
    let allowed_methods = list(
        out,
        "cors.allowed_methods",
        raw.allowed_methods.as_deref().unwrap_or(&default_methods),
        true,
    );
    let allowed_headers = list(
        out,
        "cors.allowed_headers",
        raw.allowed_headers.as_deref().unwrap_or(&default_headers),
        false,
    );
    let exposed_headers = (!raw.exposed_headers.is_empty())
        .then(|| list(out, "cors.exposed_headers", &raw.exposed_headers, false));
    let max_age = raw.max_age.as_ref().map_or(DEFAULT_CORS_MAX_AGE, |d| {
        duration(out, "cors.max_age", d, DEFAULT_CORS_MAX_AGE)
    });
    CorsConfig {
        allowed_origins: (!any).then_some(origins),
        allowed_methods,
        allowed_headers,
        exposed_headers,
        allow_credentials: raw.allow_credentials,
        max_age: HeaderValue::from(max_age.as_secs()),
    }
}

fn mock_response(raw: &RawMock, out: &mut FileProblems<'_>) -> MockResponse {
    let status = match StatusCode::from_u16(raw.status) {
        Ok(s) if (100..=599).contains(&raw.status) => s,
        _ => {
            out.push(
                "upstream.mock.status",
                "must be an HTTP status code from 100 to 599",
            );
            StatusCode::OK
        }
    };
    let mut headers = HeaderMap::new();
    for (name, value) in &raw.headers.0 {
        let path = field("upstream.mock.headers", name);
        let Some(header) = out.check(&path, check::header_name(name)) else {
            continue;
        };
        // The gateway frames the body itself; a configured length could contradict it.
        if header == CONTENT_LENGTH || header == TRANSFER_ENCODING {
            out.push(&path, format!("`{name}` is set by the gateway"));
            continue;
        }
        match HeaderValue::from_str(value) {
            Ok(v) => {
                headers.append(header, v);
            }
            Err(_) => out.push(&path, "not a valid header value"),
        }
    }
    MockResponse {
        status,
        headers,
        body: Bytes::from(raw.body.clone()),
    }
}

fn auth(raw: RawAuth, out: &mut FileProblems<'_>) -> AuthConfig {
    let kind = match raw.kind.as_str() {
        "oauth2" => AuthType::OAuth2,
        "none" => AuthType::None,
        other => {
            out.push(
                "auth.type",
                format!("unknown auth type `{other}` (expected oauth2 or none)"),
            );
            AuthType::OAuth2
        }
    };
    let header = raw.header.and_then(|h| {
        let name = out.check("auth.header.name", check::header_name(&h.name))?;
        let prefix = h.prefix.unwrap_or_else(|| {
            if name == http::header::AUTHORIZATION {
                "Bearer ".to_owned()
            } else {
                String::new()
            }
        });
        Some(HeaderSource { name, prefix })
    });
    for (path, value) in [("auth.query", &raw.query), ("auth.cookie", &raw.cookie)] {
        if value.as_deref() == Some("") {
            out.push(path, "must not be empty (use null to disable)");
        }
    }
    if kind == AuthType::OAuth2 && header.is_none() && raw.query.is_none() && raw.cookie.is_none() {
        out.push(
            "auth",
            "no credential source: set header, query or cookie (or type: none for an open API)",
        );
    }
    scopes(&raw.required_scopes, "auth.required_scopes", out);
    for (i, id) in raw.accept_from.iter().enumerate() {
        if id.is_empty() {
            out.push(&index("auth.accept_from", i), "must not be empty");
        }
    }
    let mut forward_claims = Vec::with_capacity(raw.forward_claims.0.len());
    for (name, claim) in raw.forward_claims.0 {
        let path = field("auth.forward_claims", &name);
        if claim.is_empty() {
            out.push(&path, "claim name must not be empty");
        }
        if let Some(header) = out.check(&path, check::header_name(&name)) {
            forward_claims.push((header, claim));
        }
    }
    AuthConfig {
        kind,
        header,
        query: raw.query,
        cookie: raw.cookie,
        strip_credentials: raw.strip_credentials,
        required_scopes: raw.required_scopes,
        accept_from: raw.accept_from,
        forward_claims,
    }
}

const GRANT_TYPES: &str = "authorization_code, client_credentials, password or refresh_token";

fn grant_types(raw: &[String], path: &str, out: &mut FileProblems<'_>) -> Vec<GrantType> {
    if raw.is_empty() {
        out.push(path, "at least one grant type is required");
    }
    let mut grants = Vec::with_capacity(raw.len());
    for (i, g) in raw.iter().enumerate() {
        match GrantType::parse(g) {
            Some(g) if !grants.contains(&g) => grants.push(g),
            Some(_) => {}
            None => out.push(
                &index(path, i),
                format!("unknown grant type `{g}` (expected {GRANT_TYPES})"),
            ),
        }
    }
    grants
}

fn scopes(raw: &[String], path: &str, out: &mut FileProblems<'_>) {
    for (i, s) in raw.iter().enumerate() {
        let _ = out.check(&index(path, i), check::scope(s));
    }
}

pub(crate) fn claims(raw: &RawClaims, path: &str, out: &mut FileProblems<'_>) {
    for name in raw.keys() {
        let _ = out.check(&field(path, name), check::claim_name(name));
    }
}

fn oauth(raw: RawOAuth, out: &mut FileProblems<'_>) -> OAuthConfig {
    let grants = grant_types(&raw.grant_types, "oauth.grant_types", out);
    let pkce = match raw.pkce.as_str() {
        "required" => PkceMode::Required,
        "optional" => PkceMode::Optional,
        "plain" => {
            out.push(
                "oauth.pkce",
                "`plain` is never accepted (it offers no protection against a stolen code); use required (S256) or optional",
            );
            PkceMode::Required
        }
        other => {
            out.push(
                "oauth.pkce",
                format!("unknown pkce mode `{other}` (expected required or optional)"),
            );
            PkceMode::Required
        }
    };
    let login = match raw.login {
        RawLogin::Named(name) if name == "builtin" => LoginMode::Builtin,
        RawLogin::Named(name) => {
            out.push(
                "oauth.login",
                format!("unknown login `{name}` (expected builtin or {{redirect: URL}})"),
            );
            LoginMode::Builtin
        }
        RawLogin::Redirect(r) => {
            let _ = out.check("oauth.login.redirect", check::http_url(&r.redirect, true));
            LoginMode::Redirect(r.redirect)
        }
    };
    let code_ttl = duration(
        out,
        "oauth.code_ttl",
        &raw.code_ttl,
        Duration::from_secs(60),
    );
    let access_token_ttl = duration(
        out,
        "oauth.access_token.ttl",
        &raw.access_token.ttl,
        Duration::from_secs(1800),
    );
    let refresh_token_ttl = if raw.refresh_token.ttl.0 == "never" {
        None
    } else {
        Some(duration(
            out,
            "oauth.refresh_token.ttl",
            &raw.refresh_token.ttl,
            Duration::from_secs(1),
        ))
    };

    scopes(&raw.scopes, "oauth.scopes", out);
    let mut api_scopes: Vec<String> = Vec::with_capacity(raw.scopes.len());
    for s in raw.scopes {
        if !api_scopes.contains(&s) {
            api_scopes.push(s);
        }
    }
    // An OpenID Provider grants the identity scopes (OIDC Core §3.1.2.1, §5.4) like any other:
    // clients list the ones they may ask for.
    if raw.openid {
        for s in super::OIDC_SCOPES {
            if !api_scopes.iter().any(|x| x == s) {
                api_scopes.push(s.to_string());
            }
        }
    }
    let login_session =
        super::parse_duration_or_off(&raw.login_session.0).unwrap_or_else(|message| {
            out.push("oauth.login_session", message);
            Duration::ZERO
        });

    let notifications = raw.notifications.map(|n| {
        let _ = out.check(
            "oauth.notifications.url",
            check::secret_receiver_url(&n.url),
        );
        if n.shared_secret.is_empty() {
            out.push("oauth.notifications.shared_secret", "must not be empty");
        }
        Notifications {
            url: n.url,
            shared_secret: n.shared_secret,
        }
    });

    let mut clients: Vec<ClientDef> = Vec::with_capacity(raw.clients.len());
    for (i, c) in raw.clients.into_iter().enumerate() {
        let path = index("oauth.clients", i);
        if let Some(first) = clients.iter().position(|x| x.client_id == c.client_id) {
            out.push(
                &field(&path, "client_id"),
                format!(
                    "duplicate client_id `{}` (first at oauth.clients[{first}])",
                    c.client_id
                ),
            );
        }
        clients.push(client(c, &path, &grants, &api_scopes, out));
    }

    if raw.max_sessions_per_user == 0 {
        out.push(
            "oauth.max_sessions_per_user",
            "must be at least 1 (each sign-in starts a session)",
        );
    }
    let token_rate_limit = raw
        .token_rate_limit
        .as_ref()
        .map(|r| rate_limit(r, "oauth.token_rate_limit", out));

    OAuthConfig {
        grant_types: grants,
        pkce,
        login,
        code_ttl,
        access_token_ttl,
        refresh_token_ttl,
        max_refreshes: raw.refresh_token.max_refreshes,
        scopes: api_scopes,
        notifications,
        clients,
        max_sessions_per_user: raw.max_sessions_per_user,
        token_rate_limit,
        openid: raw.openid,
        login_session,
    }
}

/// Validates one client against its API's grants and scopes. The admin API runs the same checks on
/// clients created at runtime, so a client is valid in the same way wherever it is defined.
pub(crate) fn client(
    raw: RawClient,
    path: &str,
    api_grants: &[GrantType],
    api_scopes: &[String],
    out: &mut FileProblems<'_>,
) -> ClientDef {
    let _ = out.check(&field(path, "client_id"), check::client_id(&raw.client_id));
    if let Some(hash) = &raw.secret_hash {
        let _ = out.check(&field(path, "secret_hash"), check::argon2id(hash));
    }

    let uris_path = field(path, "redirect_uris");
    for (i, uri) in raw.redirect_uris.iter().enumerate() {
        let _ = out.check(&index(&uris_path, i), check::redirect_uri(uri));
    }

    let grants_path = field(path, "grant_types");
    let grants = grant_types(&raw.grant_types, &grants_path, out);
    for (i, g) in raw.grant_types.iter().enumerate() {
        let Some(g) = GrantType::parse(g) else {
            continue;
        };
        if !api_grants.contains(&g) {
            out.push(
                &index(&grants_path, i),
                format!(
                    "grant type `{}` is not enabled for this API (oauth.grant_types)",
                    g.as_str()
                ),
            );
        }
        if g == GrantType::ClientCredentials && raw.secret_hash.is_none() {
            out.push(
                &index(&grants_path, i),
                "a public client (no secret_hash) cannot use client_credentials",
            );
        }
    }
    if grants.contains(&GrantType::AuthorizationCode) && raw.redirect_uris.is_empty() {
        out.push(
            &uris_path,
            "at least one redirect URI is required for the authorization_code grant",
        );
    }

    let scopes_path = field(path, "scopes");
    for (i, s) in raw.scopes.iter().enumerate() {
        if out
            .check(&index(&scopes_path, i), check::scope(s))
            .is_some()
            && !api_scopes.contains(s)
        {
            out.push(
                &index(&scopes_path, i),
                format!("scope `{s}` is not in oauth.scopes"),
            );
        }
    }
    if raw.policy.as_deref() == Some("") {
        out.push(&field(path, "policy"), "must not be empty");
    }
    claims(&raw.claims, &field(path, "claims"), out);
    let logout_path = field(path, "post_logout_redirect_uris");
    for (i, uri) in raw.post_logout_redirect_uris.iter().enumerate() {
        let _ = out.check(&index(&logout_path, i), check::redirect_uri(uri));
    }

    ClientDef {
        client_id: raw.client_id,
        secret_hash: raw.secret_hash,
        redirect_uris: raw.redirect_uris,
        grant_types: grants,
        scopes: raw.scopes,
        policy: raw.policy,
        claims: raw.claims,
        post_logout_redirect_uris: raw.post_logout_redirect_uris,
        skip_consent: raw.skip_consent,
    }
}

pub(crate) fn rate_limit(raw: &RawRateLimit, path: &str, out: &mut FileProblems<'_>) -> RateLimit {
    if raw.rate == 0 {
        out.push(&field(path, "rate"), "must be greater than 0");
    }
    let on_storage_error = match raw.on_storage_error.as_str() {
        "local" => OnStorageError::Local,
        "allow" => OnStorageError::Allow,
        "deny" => OnStorageError::Deny,
        other => {
            out.push(
                &field(path, "on_storage_error"),
                format!("unknown value `{other}` (expected local, allow or deny)"),
            );
            OnStorageError::Local
        }
    };
    RateLimit {
        rate: raw.rate,
        per: duration(out, &field(path, "per"), &raw.per, Duration::from_secs(1)),
        on_storage_error,
        exact: raw.exact,
    }
}

pub(crate) fn quota(raw: &RawQuota, path: &str, out: &mut FileProblems<'_>) -> Quota {
    if raw.max == 0 {
        out.push(&field(path, "max"), "must be greater than 0");
    }
    Quota {
        max: raw.max,
        period: duration(
            out,
            &field(path, "period"),
            &raw.period,
            Duration::from_secs(1),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testutil::{Fixture, PHC};

    const FILE: &str = "api-definitions/movies.yaml";

    /// Writes `api-definitions/movies.yaml` and returns the fixture.
    fn with_api(yaml: &str) -> Fixture {
        let f = Fixture::new();
        f.write(FILE, yaml);
        f
    }

    fn expect(yaml: &str, line: &str) {
        with_api(yaml).expect(&format!("{FILE}: {line}"));
    }

    fn load_api(yaml: &str) -> ApiDef {
        let f = with_api(yaml);
        let config = f.load().unwrap_or_else(|e| panic!("{e}"));
        let api = config
            .runtime
            .apis
            .iter()
            .find(|a| a.listen_path != "/echo/")
            .cloned();
        Arc::unwrap_or_clone(api.expect("movies api"))
    }

    use std::sync::Arc;

    const PROXY: &str = "listen_path: /movies/\nupstream: {url: 'http://127.0.0.1:9000/v1'}\n";

    /// An OAuth API whose `clients[0]` is valid and whose `clients[1]` is `client` (YAML flow map).
    fn with_client(client: &str) -> String {
        format!(
            "{PROXY}oauth:\n  grant_types: [authorization_code, client_credentials, password, refresh_token]\n  scopes: [read, write]\n  clients:\n    - {{client_id: web, secret_hash: '{PHC}', redirect_uris: ['https://app.example/cb'], grant_types: [authorization_code, refresh_token], scopes: [read]}}\n    - {client}\n"
        )
    }

    #[test]
    fn valid_client_fixture_loads() {
        let api = load_api(&with_client(
            "{client_id: cli, secret_hash: '$PHC', grant_types: [client_credentials]}"
                .replace("$PHC", PHC)
                .as_str(),
        ));
        let oauth = api.oauth.expect("oauth");
        assert_eq!(oauth.clients.len(), 2);
        assert_eq!(
            oauth.clients[1].grant_types,
            vec![GrantType::ClientCredentials]
        );
    }

    #[test]
    fn id_rules() {
        expect(
            &format!("id: 'my movies'\n{PROXY}"),
            "id: `my movies` must be 1–64 characters of A-Z, a-z, 0-9, `_` and `-`",
        );
        let f = Fixture::new();
        f.write("api-definitions/my movies.yaml", PROXY);
        f.expect(
            "api-definitions/my movies.yaml: id: `my movies` must be 1–64 characters of A-Z, a-z, 0-9, `_` and `-` (the id defaults to the file name; set `id`)",
        );
    }

    #[test]
    fn id_and_name_default() {
        let api = load_api(PROXY);
        assert_eq!(api.id, "movies");
        assert_eq!(api.name, "movies");
        assert!(api.strip_listen_path);
        assert!(api.file.ends_with(FILE));
    }

    #[test]
    fn allow_semicolons_defaults_to_off() {
        assert!(!load_api(PROXY).allow_semicolons);
        assert!(load_api(&format!("{PROXY}allow_semicolons: true\n")).allow_semicolons);
        expect(
            &format!("{PROXY}allow_semicolons: sometimes\n"),
            "allow_semicolons: invalid type: string \"sometimes\", expected a boolean",
        );
    }

    #[test]
    fn listen_path_rules() {
        let up = "upstream: {url: 'http://u'}\n";
        expect(
            &format!("listen_path: /movies\n{up}"),
            "listen_path: must start and end with `/`",
        );
        expect(
            &format!("listen_path: /a/../b/\n{up}"),
            "listen_path: must not contain empty, `.` or `..` segments",
        );
        expect(
            &format!("listen_path: /a%20b/\n{up}"),
            "listen_path: must not contain `%` (`%`, `\\`, `?`, `#`, whitespace and non-ASCII characters are not allowed)",
        );
        expect(up, "missing field `listen_path`");
    }

    #[test]
    fn upstream_exactly_one_target() {
        expect(
            "listen_path: /m/\nupstream: {preserve_host: true}\n",
            "upstream: set exactly one of url, targets or mock",
        );
        expect(
            "listen_path: /m/\nupstream: {url: 'http://u', mock: {status: 200}}\n",
            "upstream: set exactly one of url, targets or mock, not several",
        );
    }

    #[test]
    fn upstream_url_rules() {
        let cases = [
            ("ftp://u/", "scheme must be http or https, not `ftp`"),
            ("//u/", "not an absolute http(s) URL"),
            ("http://u/v1?x=1", "must not have a query (`?`)"),
            ("http://u/v1#x", "must not have a fragment (`#`)"),
        ];
        for (url, message) in cases {
            expect(
                &format!("listen_path: /m/\nupstream: {{url: '{url}'}}\n"),
                &format!("upstream.url: {message}"),
            );
        }
    }

    #[test]
    fn upstream_url_parsed() {
        let api = load_api(
            "listen_path: /movies/\nupstream: {url: 'https://u.example:8443/v1/', timeout: 5s, preserve_host: true}\n",
        );
        let UpstreamTarget::Targets(targets) = &api.upstream.target else {
            panic!("url")
        };
        let (uri, path_prefix) = (&targets[0].uri, &targets[0].path_prefix);
        assert_eq!(uri.to_string(), "https://u.example:8443/");
        assert_eq!(path_prefix, "/v1");
        assert_eq!(api.upstream.timeout, Some(Duration::from_secs(5)));
        assert!(api.upstream.preserve_host);

        let api = load_api("listen_path: /movies/\nupstream: {url: 'http://u'}\n");
        let UpstreamTarget::Targets(targets) = &api.upstream.target else {
            panic!("url")
        };
        let path_prefix = &targets[0].path_prefix;
        assert_eq!(path_prefix, "");
        assert_eq!(api.upstream.timeout, None);
    }

    #[test]
    fn targets_and_balancing_parsed() {
        let api = load_api(
            "listen_path: /m/\nupstream:\n  targets:\n    - {url: 'http://10.0.0.1:9000/v1', weight: 1}\n    - {url: 'http://10.0.0.2:9000', weight: 3}\n  balance: hash\n  hash_on: {claim: sub}\n  health_check:\n    active: {path: /ping, interval: 2s, timeout: 500ms, healthy_after: 1, unhealthy_after: 3}\n    passive: {}\n  retries: 2\n",
        );
        let UpstreamTarget::Targets(targets) = &api.upstream.target else {
            panic!("targets")
        };
        assert_eq!(targets.len(), 2);
        assert_eq!(targets[0].name(), "http://10.0.0.1:9000/v1");
        assert_eq!((targets[0].weight, targets[1].weight), (1, 3));
        assert_eq!(
            api.upstream.balance,
            Balance::Hash(HashOn::Claim("sub".into()))
        );
        let active = api.upstream.health_check.active.as_ref().unwrap();
        assert_eq!(active.path, "/ping");
        assert_eq!(active.interval, Duration::from_secs(2));
        assert_eq!(active.timeout, Duration::from_millis(500));
        assert_eq!((active.healthy_after, active.unhealthy_after), (1, 3));
        // Defaults of an empty passive block.
        assert_eq!(
            api.upstream.health_check.passive,
            Some(PassiveCheck {
                unhealthy_after: 3,
                eject_for: Duration::from_secs(30)
            })
        );
        assert_eq!(api.upstream.retries, 2);

        // `url` is one target of weight 1, round robin, one retry, no health checks.
        let api = load_api("listen_path: /m/\nupstream: {url: 'http://u'}\n");
        let UpstreamTarget::Targets(targets) = &api.upstream.target else {
            panic!("targets")
        };
        assert_eq!(targets.len(), 1);
        assert_eq!(api.upstream.balance, Balance::RoundRobin);
        assert_eq!(api.upstream.retries, 1);
        assert_eq!(api.upstream.health_check, HealthCheck::default());
    }

    #[test]
    fn target_and_balancing_rules() {
        let cases = [
            (
                "upstream: {url: 'http://u', targets: [{url: 'http://v'}]}",
                "upstream: set exactly one of url, targets or mock, not several",
            ),
            (
                "upstream: {targets: []}",
                "upstream.targets: at least one target is required",
            ),
            (
                "upstream: {targets: [{url: 'http://a'}, {url: 'https://b'}]}",
                "upstream.targets[1].url: every target must use the scheme of the first one",
            ),
            (
                "upstream: {targets: [{url: 'http://a'}, {url: 'http://a/'}]}",
                "upstream.targets[1].url: duplicate target (first at upstream.targets[0])",
            ),
            (
                "upstream: {targets: [{url: 'http://a', weight: 0}]}",
                "upstream.targets[0].weight: must be from 1 to 1000",
            ),
            (
                "upstream: {url: 'http://a', balance: random}",
                "upstream.balance: unknown balance `random` (expected round_robin, least_connections or hash)",
            ),
            (
                "upstream: {url: 'http://a', hash_on: client_ip}",
                "upstream.hash_on: only applies with balance: hash",
            ),
            (
                "upstream: {url: 'http://a', balance: hash, hash_on: {cookie: x}}",
                "upstream.hash_on: expected client_ip, {header: NAME} or {claim: NAME}",
            ),
            (
                "upstream: {url: 'http://a', retries: 11}",
                "upstream.retries: at most 10 (each retry goes to another target)",
            ),
            (
                "upstream: {url: 'http://a', health_check: {active: {interval: 1s, timeout: 2s}}}",
                "upstream.health_check.active.timeout: must not be longer than the interval",
            ),
            (
                "upstream: {url: 'http://a', health_check: {active: {path: health}}}",
                "upstream.health_check.active.path: must be a path starting with `/`",
            ),
            (
                "upstream: {url: 'http://a', health_check: {passive: {unhealthy_after: 0}}}",
                "upstream.health_check.passive.unhealthy_after: must be from 1 to 100",
            ),
            (
                "upstream: {mock: {status: 200}, retries: 1}",
                "upstream: balance, hash_on, health_check, retries and websockets need url or targets, not mock",
            ),
        ];
        for (upstream, message) in cases {
            expect(&format!("listen_path: /m/\n{upstream}\n"), message);
        }
    }

    #[test]
    fn cors_rules() {
        let api = load_api(
            "listen_path: /m/\nupstream: {url: 'http://u'}\ncors:\n  allowed_origins: [https://App.example, 'http://localhost:3000']\n  exposed_headers: [X-RateLimit-Remaining]\n  allow_credentials: true\n  max_age: 1h\n",
        );
        let cors = api.cors.as_ref().unwrap();
        assert_eq!(
            cors.allowed_origins.as_deref(),
            Some(
                &[
                    "https://app.example".to_owned(),
                    "http://localhost:3000".to_owned()
                ][..]
            )
        );
        assert_eq!(cors.allowed_methods, "GET, HEAD, POST");
        assert_eq!(cors.allowed_headers, "Authorization, Content-Type");
        assert_eq!(
            cors.exposed_headers.as_ref().unwrap(),
            "X-RateLimit-Remaining"
        );
        assert!(cors.allow_credentials);
        assert_eq!(cors.max_age, "3600");

        let cases = [
            (
                "{allowed_origins: ['*'], allow_credentials: true}",
                "cors.allowed_origins[0]: `*` is not allowed with allow_credentials: true (browsers refuse it); list the origins",
            ),
            (
                "{allowed_origins: ['https://app.example/']}",
                "cors.allowed_origins[0]: must be an origin like https://app.example or http://localhost:3000 (no path, no trailing `/`), or `*`",
            ),
            (
                "{allowed_origins: []}",
                "cors.allowed_origins: at least one origin is required",
            ),
            (
                "{allowed_origins: ['*'], allowed_headers: ['bad header']}",
                "cors.allowed_headers[0]: `bad header` is not a valid header name",
            ),
        ];
        for (cors, message) in cases {
            expect(
                &format!("listen_path: /m/\nupstream: {{url: 'http://u'}}\ncors: {cors}\n"),
                message,
            );
        }
    }

    #[test]
    fn upstream_timeout_rule() {
        expect(
            "listen_path: /m/\nupstream: {url: 'http://u', timeout: 5 s}\n",
            "upstream.timeout: `5 s`: expected a duration like 250ms, 30s, 15m, 12h or 30d",
        );
    }

    #[test]
    fn mock_rules() {
        expect(
            "listen_path: /m/\nupstream: {mock: {status: 600}}\n",
            "upstream.mock.status: must be an HTTP status code from 100 to 599",
        );
        expect(
            "listen_path: /m/\nupstream: {mock: {status: 99}}\n",
            "upstream.mock.status: must be an HTTP status code from 100 to 599",
        );
        expect(
            "listen_path: /m/\nupstream: {mock: {headers: {'bad header': x}}}\n",
            "upstream.mock.headers.bad header: `bad header` is not a valid header name",
        );
        expect(
            "listen_path: /m/\nupstream: {mock: {headers: {x-a: \"a\\nb\"}}}\n",
            "upstream.mock.headers.x-a: not a valid header value",
        );
        expect(
            "listen_path: /m/\nupstream: {mock: {headers: {Content-Length: '3'}}}\n",
            "upstream.mock.headers.Content-Length: `Content-Length` is set by the gateway",
        );
    }

    #[test]
    fn mock_parsed() {
        let api = load_api(
            "listen_path: /movies/\nupstream:\n  mock: {status: 201, headers: {content-type: application/json}, body: '{\"ok\":true}'}\nauth: {type: none}\n",
        );
        let UpstreamTarget::Mock(mock) = &api.upstream.target else {
            panic!("mock")
        };
        assert_eq!(mock.status, StatusCode::CREATED);
        assert_eq!(mock.headers["content-type"], "application/json");
        assert_eq!(mock.body, Bytes::from_static(b"{\"ok\":true}"));
    }

    #[test]
    fn auth_type_rule() {
        expect(
            &format!("{PROXY}auth: {{type: basic}}\n"),
            "auth.type: unknown auth type `basic` (expected oauth2 or none)",
        );
    }

    #[test]
    fn auth_defaults() {
        let api = load_api(PROXY);
        assert_eq!(api.auth.kind, AuthType::OAuth2);
        assert_eq!(
            api.auth.header,
            Some(HeaderSource {
                name: http::header::AUTHORIZATION,
                prefix: "Bearer ".into()
            })
        );
        assert_eq!(api.auth.query, None);
        assert_eq!(api.auth.cookie, None);
        assert!(api.auth.strip_credentials);
    }

    #[test]
    fn auth_header_rules() {
        expect(
            &format!("{PROXY}auth: {{header: {{name: 'X Token'}}}}\n"),
            "auth.header.name: `X Token` is not a valid header name",
        );
        expect(
            &format!("{PROXY}auth: {{header: null}}\n"),
            "auth: no credential source: set header, query or cookie (or type: none for an open API)",
        );
        expect(
            &format!("{PROXY}auth: {{query: ''}}\n"),
            "auth.query: must not be empty (use null to disable)",
        );
        expect(
            &format!("{PROXY}auth: {{cookie: ''}}\n"),
            "auth.cookie: must not be empty (use null to disable)",
        );

        let api = load_api(&format!(
            "{PROXY}auth: {{header: null, query: access_token}}\n"
        ));
        assert_eq!(api.auth.header, None);
        assert_eq!(api.auth.query.as_deref(), Some("access_token"));
        let api = load_api(&format!("{PROXY}auth: {{header: {{name: X-Api-Key}}}}\n"));
        assert_eq!(
            api.auth.header,
            Some(HeaderSource {
                name: "x-api-key".parse().unwrap(),
                prefix: String::new()
            })
        );
        let api = load_api(&format!(
            "{PROXY}auth: {{header: {{name: Authorization, prefix: 'Token '}}}}\n"
        ));
        assert_eq!(api.auth.header.map(|h| h.prefix).as_deref(), Some("Token "));
        // An open API needs no credential source.
        let api = load_api(&format!("{PROXY}auth: {{type: none, header: null}}\n"));
        assert_eq!(api.auth.kind, AuthType::None);
    }

    #[test]
    fn required_scopes_rule() {
        expect(
            &format!("{PROXY}auth: {{required_scopes: ['read write']}}\n"),
            "auth.required_scopes[0]: `read write` is not a valid scope (visible ASCII characters except `\"` and `\\`, no spaces)",
        );
    }

    #[test]
    fn forward_claims_rules() {
        expect(
            &format!("{PROXY}auth: {{forward_claims: {{'X User': sub}}}}\n"),
            "auth.forward_claims.X User: `X User` is not a valid header name",
        );
        expect(
            &format!("{PROXY}auth: {{forward_claims: {{X-User: ''}}}}\n"),
            "auth.forward_claims.X-User: claim name must not be empty",
        );
        let api = load_api(&format!(
            "{PROXY}auth: {{forward_claims: {{X-User-Id: sub, X-Client-Id: client_id, A-Tier: tier}}}}\n"
        ));
        let names: Vec<_> = api
            .auth
            .forward_claims
            .iter()
            .map(|(h, c)| (h.as_str(), c.as_str()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("x-user-id", "sub"),
                ("x-client-id", "client_id"),
                ("a-tier", "tier")
            ]
        );
    }

    #[test]
    fn accept_from_empty_rule() {
        expect(
            &format!("{PROXY}auth: {{accept_from: ['']}}\n"),
            "auth.accept_from[0]: must not be empty",
        );
    }

    #[test]
    fn oauth_grant_types_rules() {
        expect(
            &format!("{PROXY}oauth: {{}}\n"),
            "oauth.grant_types: at least one grant type is required",
        );
        expect(
            &format!("{PROXY}oauth: {{grant_types: [password, implicit]}}\n"),
            "oauth.grant_types[1]: unknown grant type `implicit` (expected authorization_code, client_credentials, password or refresh_token)",
        );
    }

    #[test]
    fn oauth_pkce_rules() {
        expect(
            &format!("{PROXY}oauth: {{grant_types: [password], pkce: plain}}\n"),
            "oauth.pkce: `plain` is never accepted (it offers no protection against a stolen code); use required (S256) or optional",
        );
        expect(
            &format!("{PROXY}oauth: {{grant_types: [password], pkce: S256}}\n"),
            "oauth.pkce: unknown pkce mode `S256` (expected required or optional)",
        );
    }

    #[test]
    fn oauth_login_rules() {
        expect(
            &format!("{PROXY}oauth: {{grant_types: [password], login: external}}\n"),
            "oauth.login: unknown login `external` (expected builtin or {redirect: URL})",
        );
        expect(
            &format!("{PROXY}oauth: {{grant_types: [password], login: {{redirect: /login}}}}\n"),
            "oauth.login.redirect: not an absolute http(s) URL",
        );
        expect(
            &format!(
                "{PROXY}oauth: {{grant_types: [password], login: {{redirect: 'https://idp', extra: 1}}}}\n"
            ),
            "oauth.login.extra: unknown field `extra`, expected `redirect`",
        );
        let api = load_api(&format!(
            "{PROXY}oauth: {{grant_types: [password], login: {{redirect: 'https://idp.example/login'}}}}\n"
        ));
        assert_eq!(
            api.oauth.unwrap().login,
            LoginMode::Redirect("https://idp.example/login".into())
        );
    }

    #[test]
    fn oauth_scopes_rule() {
        expect(
            &format!("{PROXY}oauth: {{grant_types: [password], scopes: [read, '']}}\n"),
            "oauth.scopes[1]: must not be empty",
        );
        expect(
            &format!("{PROXY}oauth: {{grant_types: [password], scopes: ['a b']}}\n"),
            "oauth.scopes[0]: `a b` is not a valid scope (visible ASCII characters except `\"` and `\\`, no spaces)",
        );
    }

    #[test]
    fn oauth_ttl_rules() {
        expect(
            &format!("{PROXY}oauth: {{grant_types: [password], code_ttl: 0s}}\n"),
            "oauth.code_ttl: `0s`: must be greater than 0",
        );
        expect(
            &format!("{PROXY}oauth: {{grant_types: [password], access_token: {{ttl: 1y}}}}\n"),
            "oauth.access_token.ttl: `1y`: expected a duration like 250ms, 30s, 15m, 12h or 30d",
        );
        expect(
            &format!(
                "{PROXY}oauth: {{grant_types: [password], refresh_token: {{ttl: forever}}}}\n"
            ),
            "oauth.refresh_token.ttl: `forever`: expected a duration like 250ms, 30s, 15m, 12h or 30d",
        );
    }

    #[test]
    fn oauth_openid_fields() {
        let o = load_api(&format!(
            "{PROXY}oauth: {{grant_types: [authorization_code], openid: true, login_session: 0s, scopes: [read, email], clients: [{{client_id: rp, redirect_uris: ['https://rp.example/cb'], post_logout_redirect_uris: ['https://rp.example/bye'], skip_consent: true, grant_types: [authorization_code], scopes: [openid, profile]}}]}}\n"
        ))
        .oauth
        .unwrap();
        assert!(o.openid);
        assert!(o.login_session.is_zero());
        // The identity scopes join the API's own, once each.
        assert_eq!(o.scopes, vec!["read", "email", "openid", "profile"]);
        assert_eq!(
            o.clients[0].post_logout_redirect_uris,
            vec!["https://rp.example/bye"]
        );
        assert!(o.clients[0].skip_consent);
        let o = load_api(&format!("{PROXY}oauth: {{grant_types: [password]}}\n"))
            .oauth
            .unwrap();
        assert!(!o.openid);
        assert_eq!(o.login_session, Duration::from_secs(8 * 3600));
        expect(
            &format!("{PROXY}oauth: {{grant_types: [password], login_session: soon}}\n"),
            "oauth.login_session: `soon`: expected a duration like 250ms, 30s, 15m, 12h or 30d",
        );
        // Without openid the identity scopes are not the API's.
        expect(
            &with_client("{client_id: x, grant_types: [password], scopes: [openid]}"),
            "oauth.clients[1].scopes[0]: scope `openid` is not in oauth.scopes",
        );
        expect(
            &with_client(
                "{client_id: x, grant_types: [password], post_logout_redirect_uris: ['javascript:alert(1)']}",
            ),
            "oauth.clients[1].post_logout_redirect_uris[0]: scheme `javascript` is not allowed",
        );
    }

    #[test]
    fn oauth_defaults_and_never() {
        let o = load_api(&format!(
            "{PROXY}oauth: {{grant_types: [password, refresh_token, password]}}\n"
        ))
        .oauth
        .unwrap();
        assert_eq!(
            o.grant_types,
            vec![GrantType::Password, GrantType::RefreshToken]
        );
        assert_eq!(o.pkce, PkceMode::Required);
        assert_eq!(o.login, LoginMode::Builtin);
        assert_eq!(o.code_ttl, Duration::from_secs(60));
        assert_eq!(o.access_token_ttl, Duration::from_secs(1800));
        assert_eq!(o.refresh_token_ttl, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(o.max_refreshes, None);
        let o = load_api(&format!("{PROXY}oauth: {{grant_types: [password], refresh_token: {{ttl: never, max_refreshes: 0}}}}\n")).oauth.unwrap();
        assert_eq!(o.refresh_token_ttl, None);
        assert_eq!(o.max_refreshes, Some(0));
    }

    #[test]
    fn notifications_rules() {
        expect(
            &format!(
                "{PROXY}oauth: {{grant_types: [password], notifications: {{url: hook, shared_secret: s}}}}\n"
            ),
            "oauth.notifications.url: not an absolute http(s) URL",
        );
        expect(
            &format!(
                "{PROXY}oauth: {{grant_types: [password], notifications: {{url: 'http://127.0.0.1/hook', shared_secret: ''}}}}\n"
            ),
            "oauth.notifications.shared_secret: must not be empty",
        );
        expect(
            &format!(
                "{PROXY}oauth: {{grant_types: [password], notifications: {{url: 'http://hooks.example.com/tollgate', shared_secret: s}}}}\n"
            ),
            "oauth.notifications.url: http is only allowed for loopback hosts (127.0.0.1, [::1], localhost); use https, since notifications carry tokens",
        );
    }

    #[test]
    fn client_id_rules() {
        expect(
            &with_client("{client_id: 'a b', grant_types: [password]}"),
            "oauth.clients[1].client_id: must be 1–128 visible ASCII characters (no spaces)",
        );
        expect(
            &with_client("{client_id: web, grant_types: [password]}"),
            "oauth.clients[1].client_id: duplicate client_id `web` (first at oauth.clients[0])",
        );
    }

    #[test]
    fn client_secret_hash_rule() {
        expect(
            &with_client("{client_id: cli, secret_hash: hunter2, grant_types: [password]}"),
            "oauth.clients[1].secret_hash: not an argon2id PHC string (make one with `tollgate hash-secret`)",
        );
    }

    #[test]
    fn client_redirect_uri_rules() {
        expect(
            &with_client(
                "{client_id: spa, redirect_uris: [/callback], grant_types: [authorization_code]}",
            ),
            "oauth.clients[1].redirect_uris[0]: not an absolute URL",
        );
        expect(
            &with_client(
                "{client_id: spa, redirect_uris: ['https://a/cb#x'], grant_types: [authorization_code]}",
            ),
            "oauth.clients[1].redirect_uris[0]: must not have a fragment (`#`)",
        );
        expect(
            &with_client(
                "{client_id: spa, redirect_uris: ['http://app.example/cb'], grant_types: [authorization_code]}",
            ),
            "oauth.clients[1].redirect_uris[0]: http is only allowed for loopback hosts (127.0.0.1, [::1], localhost); use https",
        );
        expect(
            &with_client("{client_id: spa, grant_types: [authorization_code]}"),
            "oauth.clients[1].redirect_uris: at least one redirect URI is required for the authorization_code grant",
        );
        expect(
            &with_client("{client_id: spa, redirect_uris: 5, grant_types: [authorization_code]}"),
            "oauth.clients[1].redirect_uris: invalid type: integer `5`, expected a sequence",
        );
    }

    #[test]
    fn client_grant_type_rules() {
        expect(
            &with_client("{client_id: cli}"),
            "oauth.clients[1].grant_types: at least one grant type is required",
        );
        expect(
            &with_client("{client_id: cli, grant_types: [implicit]}"),
            "oauth.clients[1].grant_types[0]: unknown grant type `implicit` (expected authorization_code, client_credentials, password or refresh_token)",
        );
        expect(
            &with_client("{client_id: cli, grant_types: [client_credentials]}"),
            "oauth.clients[1].grant_types[0]: a public client (no secret_hash) cannot use client_credentials",
        );
        let yaml = format!(
            "{PROXY}oauth:\n  grant_types: [password]\n  clients: [{{client_id: cli, grant_types: [password, refresh_token]}}]\n"
        );
        expect(
            &yaml,
            "oauth.clients[0].grant_types[1]: grant type `refresh_token` is not enabled for this API (oauth.grant_types)",
        );
    }

    #[test]
    fn client_scope_rule() {
        expect(
            &with_client("{client_id: cli, grant_types: [password], scopes: [read, admin]}"),
            "oauth.clients[1].scopes[1]: scope `admin` is not in oauth.scopes",
        );
    }

    #[test]
    fn client_claims_rule() {
        expect(
            &with_client("{client_id: cli, grant_types: [password], claims: {sub: root}}"),
            "oauth.clients[1].claims.sub: claim `sub` is set by the gateway and cannot be configured",
        );
    }

    #[test]
    fn rate_limit_and_quota_rules() {
        expect(
            &format!("{PROXY}rate_limit: {{rate: 0, per: 1s}}\n"),
            "rate_limit.rate: must be greater than 0",
        );
        expect(
            &format!("{PROXY}rate_limit: {{rate: 5, per: 1s, on_storage_error: panic}}\n"),
            "rate_limit.on_storage_error: unknown value `panic` (expected local, allow or deny)",
        );
        expect(
            &format!("{PROXY}rate_limit: {{rate: 5, per: 0ms}}\n"),
            "rate_limit.per: `0ms`: must be greater than 0",
        );
        expect(
            &format!("{PROXY}quota: {{max: 0, period: 1d}}\n"),
            "quota.max: must be greater than 0",
        );
        expect(
            &format!("{PROXY}quota: {{max: 10, period: month}}\n"),
            "quota.period: `month`: expected a duration like 250ms, 30s, 15m, 12h or 30d",
        );
        expect(
            &format!("{PROXY}global_rate_limit: {{rate: 0, per: 1s}}\n"),
            "global_rate_limit.rate: must be greater than 0",
        );
        expect(
            &format!("{PROXY}rate_limit: {{rate: 5}}\n"),
            "rate_limit: missing field `per`",
        );
    }

    #[test]
    fn limits_parsed() {
        let api = load_api(&format!(
            "{PROXY}rate_limit: {{rate: 100, per: 1s, on_storage_error: deny}}\nquota: {{max: 10000, period: 1d}}\nglobal_rate_limit: {{rate: 5000, per: 1s}}\n"
        ));
        assert_eq!(
            api.rate_limit,
            Some(RateLimit {
                rate: 100,
                per: Duration::from_secs(1),
                on_storage_error: OnStorageError::Deny,
                exact: false,
            })
        );
        assert_eq!(
            api.quota,
            Some(Quota {
                max: 10_000,
                period: Duration::from_secs(86_400)
            })
        );
        assert_eq!(
            api.global_rate_limit,
            Some(RateLimit {
                rate: 5000,
                per: Duration::from_secs(1),
                on_storage_error: OnStorageError::Local,
                exact: false,
            })
        );
    }

    #[test]
    fn unknown_field_rule() {
        expect(
            "listen_path: /m/\nupstream: {target: 'http://u'}\n",
            "upstream.target: unknown field `target`, expected one of `url`, `mock`, `preserve_host`, `timeout`, `targets`, `balance`, `hash_on`, `health_check`, `retries`, `websockets`",
        );
    }
}
