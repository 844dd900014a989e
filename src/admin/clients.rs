//! OAuth clients through the admin API (docs/design.md §6): `/apis/{api}/clients[/{id}[/rotate-secret|/sessions]]`.
//!
//! Two kinds of client share one namespace per API:
//! - static clients from the API definition file: listed and readable here (`"read_only": true`), and
//!   their sessions can be listed and revoked, but changing them (PUT, DELETE, rotate-secret) answers
//!   409 `read_only`: the file is the source of truth and a reload would undo any change;
//! - dynamic clients created here: they live in the store (Redis when configured), so every node sees
//!   them at once.
//!
//! A client is validated by the same code as a static one in a file (`config::api::client`), plus the
//! policy check the loader does across files (here a policy may also be one created through the admin
//! API); every problem is reported, each as `field: message`.
//!
//! Secrets are generated here (256 bits), returned exactly once (on create and on rotate) and stored
//! only as argon2id hashes; no other answer carries a secret or its hash. Rotating replaces the hash, and
//! the token endpoint's verification cache is keyed on the hash, so the old secret stops working at once.
//! Rotation leaves the client's sessions alive (as in Hydra); revoke them with `DELETE .../sessions`.
//! Deleting a client revokes all its sessions, and the deleted client can no longer authenticate.
//!
//! The sessions endpoints accept any client id, also of a client no longer defined, so the sessions of a
//! client removed from an API definition can still be listed and revoked.

use std::collections::BTreeMap;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::config::api as api_rules;
use crate::config::error::{FileProblems, Problems};
use crate::config::raw::RawClient;
use crate::config::{ApiDef, ClientDef, GrantType, OAuthConfig, RuntimeConfig};
use crate::error::{GatewayError, json_response};
use crate::http_util::{Body, empty, read_body};
use crate::proxy::gateway::Gateway;
use crate::secrets;
use crate::store::{Session, StoredClient};
use crate::token::jwt::LEEWAY_SECS;
use crate::token::sid::stateless_sid;

use super::routes::ClientAction;
use super::{now, storage};

/// Client documents are small; anything larger is a mistake.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Random bytes of a generated client_id (raised to 32 by `random_token`).
const CLIENT_ID_BYTES: usize = 12;
/// Random bytes of a generated client secret: 256 bits.
const SECRET_BYTES: usize = 32;
/// Stands in for the secret hash while a confidential client is validated, so the argon2 work is done
/// only for a valid client. Any well-formed argon2id PHC string does (the argon2 crate's test vector).
const PLACEHOLDER_HASH: &str =
    "$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4";

/// Serialises the read-check-write sequences of client changes (uniqueness on create; PUT, DELETE and
/// rotate against each other) within this process. The store has no create-if-absent, so two nodes
/// creating the same explicit client_id at the same instant are not caught; generated ids cannot clash.
pub(super) static CLIENT_WRITES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The body of POST (create) and PUT (replace).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientBody {
    /// Generated when absent (create); must name the client in the path when present (PUT).
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    redirect_uris: Vec<String>,
    #[serde(default)]
    grant_types: Vec<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    claims: BTreeMap<String, Value>,
    /// A public client has no secret (PKCE is mandatory for it). Default on create: false; on PUT: the
    /// client's current kind, which cannot change.
    #[serde(default)]
    public: Option<bool>,
}

/// Serves one action under `/apis/{api}/clients`; the API must exist and have an `oauth` block.
pub(super) async fn route<B>(
    gateway: &Gateway,
    api_id: &str,
    action: ClientAction<'_>,
    req: Request<B>,
) -> Result<Response<Body>, GatewayError>
where
    B: hyper::body::Body,
    B::Error: Into<crate::http_util::BoxError>,
{
    let runtime = gateway.runtime();
    let api = oauth_api(&runtime.config, api_id)?;
    let config = &runtime.config;
    match action {
        ClientAction::List => list(gateway, api).await,
        ClientAction::Create => {
            create(
                gateway,
                config,
                api,
                read_json(req, config.limits.body_read_timeout).await?,
            )
            .await
        }
        ClientAction::Get(id) => get(gateway, api, id).await,
        ClientAction::Replace(id) => {
            update(
                gateway,
                config,
                api,
                id,
                read_json(req, config.limits.body_read_timeout).await?,
            )
            .await
        }
        ClientAction::Delete(id) => delete(gateway, api, id).await,
        ClientAction::RotateSecret(id) => rotate_secret(gateway, api, id).await,
        ClientAction::Sessions(id) => sessions(gateway, api, id).await,
        ClientAction::RevokeSessions(id) => revoke_sessions(gateway, api, id).await,
    }
}

/// The API named in the path; it must have an `oauth` block to have clients.
fn oauth_api<'a>(config: &'a RuntimeConfig, api_id: &str) -> Result<&'a ApiDef, GatewayError> {
    let api = config
        .apis
        .iter()
        .find(|a| a.id == api_id)
        .ok_or_else(|| GatewayError::NoSuchResource(format!("no API with id `{api_id}`")))?;
    if api.oauth.is_none() {
        return Err(GatewayError::NoSuchResource(format!(
            "API `{api_id}` has no oauth block, so it has no clients"
        )));
    }
    Ok(api)
}

fn oauth_of(api: &ApiDef) -> Result<&OAuthConfig, GatewayError> {
    // `oauth_api` checked this; a missing block here would be a bug, not bad input.
    api.oauth.as_ref().ok_or(GatewayError::Internal)
}

fn static_def<'a>(api: &'a ApiDef, client_id: &str) -> Option<&'a ClientDef> {
    api.oauth
        .as_ref()?
        .clients
        .iter()
        .find(|c| c.client_id == client_id)
}

fn no_such_client(api: &ApiDef, client_id: &str) -> GatewayError {
    GatewayError::NoSuchResource(format!("API `{}` has no client `{client_id}`", api.id))
}

fn taken(api: &ApiDef, client_id: &str) -> GatewayError {
    GatewayError::Conflict(format!(
        "client_id: API `{}` already has a client `{client_id}`",
        api.id
    ))
}

fn read_only(api: &ApiDef, client_id: &str) -> GatewayError {
    GatewayError::ReadOnly(format!(
        "client `{client_id}` is defined in the API definition file ({}); read-only",
        api.file.display()
    ))
}

// --- views: what the admin API shows of a client (never a secret or its hash)

fn static_view(def: &ClientDef) -> Value {
    json!({
        "client_id": def.client_id,
        "public": def.secret_hash.is_none(),
        "redirect_uris": def.redirect_uris,
        "grant_types": def.grant_types.iter().map(|g| g.as_str()).collect::<Vec<_>>(),
        "scopes": def.scopes,
        "policy": def.policy,
        "claims": def.claims,
        "read_only": true,
    })
}

fn dynamic_view(client: &StoredClient) -> Value {
    json!({
        "client_id": client.client_id,
        "public": client.secret_hash.is_none(),
        "redirect_uris": client.redirect_uris,
        "grant_types": client.grant_types,
        "scopes": client.scopes,
        "policy": client.policy,
        "claims": client.claims,
        "read_only": false,
        "created_at": client.created_at,
    })
}

pub(super) fn session_view(session: &Session) -> Value {
    json!({
        "sid": session.sid,
        "username": session.username,
        "scope": session.scope,
        "grant": session.grant,
        "created_at": session.created_at,
        "last_refresh_at": session.last_refresh_at,
        "refresh_count": session.refresh_count,
        "expires_at": session.expires_at,
    })
}

// --- handlers

async fn list(gateway: &Gateway, api: &ApiDef) -> Result<Response<Body>, GatewayError> {
    let mut clients: Vec<Value> = oauth_of(api)?.clients.iter().map(static_view).collect();
    let mut dynamic = gateway
        .auth
        .store
        .list_clients(&api.id)
        .await
        .map_err(storage)?;
    dynamic.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    clients.extend(dynamic.iter().map(dynamic_view));
    Ok(json_response(
        StatusCode::OK,
        &json!({ "clients": clients }),
    ))
}

async fn get(gateway: &Gateway, api: &ApiDef, id: &str) -> Result<Response<Body>, GatewayError> {
    if let Some(def) = static_def(api, id) {
        return Ok(json_response(StatusCode::OK, &static_view(def)));
    }
    let stored = gateway
        .auth
        .store
        .get_client(&api.id, id)
        .await
        .map_err(storage)?;
    let stored = stored.ok_or_else(|| no_such_client(api, id))?;
    Ok(json_response(StatusCode::OK, &dynamic_view(&stored)))
}

async fn create(
    gateway: &Gateway,
    config: &RuntimeConfig,
    api: &ApiDef,
    body: ClientBody,
) -> Result<Response<Body>, GatewayError> {
    let public = body.public.unwrap_or(false);
    let client_id = match &body.client_id {
        Some(id) => id.clone(),
        None => secrets::random_token(CLIENT_ID_BYTES),
    };
    let policy_known = policy_exists(gateway, config, body.policy.as_deref()).await?;
    let def = validate(api, client_id, public, policy_known, body)?;
    if static_def(api, &def.client_id).is_some() {
        return Err(taken(api, &def.client_id));
    }
    let secret = (!public).then(|| secrets::random_token(SECRET_BYTES));
    let secret_hash = match &secret {
        Some(secret) => Some(hash(secret.clone()).await?),
        None => None,
    };
    let stored = stored_client(api, def, secret_hash, now());

    let _guard = CLIENT_WRITES.lock().await;
    let store = &gateway.auth.store;
    if static_def(api, &stored.client_id).is_some()
        || store
            .get_client(&api.id, &stored.client_id)
            .await
            .map_err(storage)?
            .is_some()
    {
        return Err(taken(api, &stored.client_id));
    }
    store.put_client(&stored).await.map_err(storage)?;
    tracing::info!(api = %api.id, client = %stored.client_id, public, "client created");

    let mut view = dynamic_view(&stored);
    if let (Some(obj), Some(secret)) = (view.as_object_mut(), secret) {
        obj.insert("client_secret".into(), Value::String(secret));
    }
    let mut response = json_response(StatusCode::CREATED, &view);
    let location = format!(
        "/apis/{}/clients/{}",
        encode_segment(&api.id),
        encode_segment(&stored.client_id)
    );
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// PUT: replaces a dynamic client's settings; its secret (hash), kind and creation time stay.
async fn update(
    gateway: &Gateway,
    config: &RuntimeConfig,
    api: &ApiDef,
    id: &str,
    body: ClientBody,
) -> Result<Response<Body>, GatewayError> {
    if body.client_id.as_deref().is_some_and(|named| named != id) {
        return Err(GatewayError::InvalidInput(format!(
            "client_id: must be the client named in the path (`{id}`); a client cannot be renamed"
        )));
    }
    if static_def(api, id).is_some() {
        return Err(read_only(api, id));
    }
    let _guard = CLIENT_WRITES.lock().await;
    let store = &gateway.auth.store;
    let current = store.get_client(&api.id, id).await.map_err(storage)?;
    let current = current.ok_or_else(|| no_such_client(api, id))?;
    let public = current.secret_hash.is_none();
    if body.public.is_some_and(|p| p != public) {
        return Err(GatewayError::InvalidInput(format!(
            "public: client `{id}` is {}; a client's kind cannot change (create a new client instead)",
            if public { "public" } else { "confidential" }
        )));
    }
    let policy_known = policy_exists(gateway, config, body.policy.as_deref()).await?;
    let def = validate(api, id.to_owned(), public, policy_known, body)?;
    let updated = stored_client(api, def, current.secret_hash, current.created_at);
    store.put_client(&updated).await.map_err(storage)?;
    // This node applies a changed policy at once; others within the proxy's few-second cache.
    tracing::info!(api = %api.id, client = %id, "client updated");
    Ok(json_response(StatusCode::OK, &dynamic_view(&updated)))
}

/// DELETE: removes a dynamic client and revokes every session of it. The client is removed first, so
/// no new session can begin (it can no longer authenticate) while the existing ones are revoked.
async fn delete(gateway: &Gateway, api: &ApiDef, id: &str) -> Result<Response<Body>, GatewayError> {
    if static_def(api, id).is_some() {
        return Err(read_only(api, id));
    }
    let _guard = CLIENT_WRITES.lock().await;
    let existed = gateway
        .auth
        .store
        .delete_client(&api.id, id)
        .await
        .map_err(storage)?;
    if !existed {
        return Err(no_such_client(api, id));
    }
    let (revoked, _) = revoke_all(gateway, api, id).await?;
    tracing::info!(api = %api.id, client = %id, sessions_revoked = revoked, "client deleted");
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response)
}

/// Gives a confidential dynamic client a new secret; the old one stops working at once.
async fn rotate_secret(
    gateway: &Gateway,
    api: &ApiDef,
    id: &str,
) -> Result<Response<Body>, GatewayError> {
    if static_def(api, id).is_some() {
        return Err(read_only(api, id));
    }
    let store = &gateway.auth.store;
    let ensure_confidential = |client: Option<StoredClient>| {
        let client = client.ok_or_else(|| no_such_client(api, id))?;
        if client.secret_hash.is_none() {
            return Err(GatewayError::Conflict(format!(
                "client `{id}` is public and has no secret to rotate"
            )));
        }
        Ok(client)
    };
    // Checked before the (deliberately slow) hashing, and again under the lock before writing.
    ensure_confidential(store.get_client(&api.id, id).await.map_err(storage)?)?;
    let secret = secrets::random_token(SECRET_BYTES);
    let secret_hash = hash(secret.clone()).await?;

    let _guard = CLIENT_WRITES.lock().await;
    let mut client = ensure_confidential(store.get_client(&api.id, id).await.map_err(storage)?)?;
    client.secret_hash = Some(secret_hash);
    store.put_client(&client).await.map_err(storage)?;
    tracing::info!(api = %api.id, client = %id, "client secret rotated");
    Ok(json_response(
        StatusCode::OK,
        &json!({ "client_id": id, "client_secret": secret }),
    ))
}

async fn sessions(
    gateway: &Gateway,
    api: &ApiDef,
    id: &str,
) -> Result<Response<Body>, GatewayError> {
    let list = gateway
        .auth
        .store
        .client_sessions(&api.id, id, now())
        .await
        .map_err(storage)?;
    let sessions: Vec<Value> = list.iter().map(session_view).collect();
    // Stateless tokens (docs/design.md §9f) are stored nowhere, so they cannot be listed one by one: the
    // client's count stands for them, with the session id their rate limits count under and the
    // cutoff (tokens issued before `not_before` are refused) if the client's tokens were revoked.
    let now = now();
    let store = &gateway.auth.store;
    let count = store.stateless_count(&api.id, id).await.map_err(storage)?;
    let not_before = store
        .client_cutoff(&api.id, id, now)
        .map(|cutoff| cutoff + 1);
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "sessions": sessions,
            "stateless": {
                "issued": count.issued,
                "last_issued_at": count.last_issued_at,
                "sid": stateless_sid(&api.id, id, None),
                "not_before": not_before,
            },
        }),
    ))
}

async fn revoke_sessions(
    gateway: &Gateway,
    api: &ApiDef,
    id: &str,
) -> Result<Response<Body>, GatewayError> {
    let (revoked, cutoff) = revoke_all(gateway, api, id).await?;
    tracing::info!(target: crate::logging::SECURITY_TARGET, security = "client_tokens_revoked", api = %api.id, client = %id, sessions_revoked = revoked, "every token of a client revoked");
    Ok(json_response(
        StatusCode::OK,
        &json!({ "revoked": revoked, "not_before": cutoff + 1 }),
    ))
}

/// Revokes every token of the client: its live sessions until they would have expired anyway (their
/// refresh tokens stop at once), and every access token issued up to now, stateless ones included,
/// by a per-client cutoff kept for as long as such a token can live.
/// Returns how many sessions it revoked and the cutoff (the `iat` up to which tokens are refused).
async fn revoke_all(
    gateway: &Gateway,
    api: &ApiDef,
    id: &str,
) -> Result<(usize, u64), GatewayError> {
    let store = &gateway.auth.store;
    let now = now();
    // The cutoff first: from here on no token issued before it passes the proxy, whatever happens to
    // the session revocations below.
    let ttl = oauth_of(api)?.access_token_ttl.as_secs();
    store
        .revoke_client_tokens(&api.id, id, now, now + ttl + LEEWAY_SECS)
        .await
        .map_err(storage)?;
    let live = store
        .client_sessions(&api.id, id, now)
        .await
        .map_err(storage)?;
    for session in &live {
        store
            .revoke_session(&session.sid, session.expires_at)
            .await
            .map_err(storage)?;
    }
    Ok((live.len(), now))
}

// --- validation and helpers

/// Whether the policy a client names exists: in policies.yaml, or stored (read from the store itself,
/// not the proxy's cache). No policy, or an empty one (which `validate` reports), counts as known.
async fn policy_exists(
    gateway: &Gateway,
    config: &RuntimeConfig,
    policy: Option<&str>,
) -> Result<bool, GatewayError> {
    let Some(id) = policy.filter(|p| !p.is_empty()) else {
        return Ok(true);
    };
    if config.policies.iter().any(|p| p.id == id) {
        return Ok(true);
    }
    let stored = gateway.auth.store.get_policy(id).await.map_err(storage)?;
    Ok(stored.is_some())
}

/// Runs the checks the config loader runs on a client in a file, plus the policy lookup (its result,
/// `policy_known`, comes from [`policy_exists`]); every problem is reported, each as `field: message`
/// (`redirect_uris[0]: http is only allowed for loopback ...`).
fn validate(
    api: &ApiDef,
    client_id: String,
    public: bool,
    policy_known: bool,
    body: ClientBody,
) -> Result<ClientDef, GatewayError> {
    let oauth = oauth_of(api)?;
    let raw = RawClient {
        client_id,
        secret_hash: (!public).then(|| PLACEHOLDER_HASH.to_owned()),
        redirect_uris: body.redirect_uris,
        grant_types: body.grant_types,
        scopes: body.scopes,
        policy: body.policy,
        claims: body.claims,
        // Not yet settable through the admin API (stored clients have no field for them).
        post_logout_redirect_uris: Vec::new(),
        skip_consent: false,
    };
    let mut problems = Problems::default();
    let mut out = FileProblems {
        file: &api.file,
        problems: &mut problems,
    };
    let def = api_rules::client(raw, "", &oauth.grant_types, &oauth.scopes, &mut out);
    if let Some(policy) = def.policy.as_deref().filter(|p| !p.is_empty())
        && !policy_known
    {
        out.push("policy", format!("no policy with id `{policy}`"));
    }
    problems.into_result(def).map_err(|errors| {
        let lines: Vec<String> = errors
            .problems()
            .iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect();
        GatewayError::InvalidInput(lines.join("; "))
    })
}

fn stored_client(
    api: &ApiDef,
    def: ClientDef,
    secret_hash: Option<String>,
    created_at: u64,
) -> StoredClient {
    let mut scopes: Vec<String> = Vec::with_capacity(def.scopes.len());
    for scope in def.scopes {
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    StoredClient {
        api_id: api.id.clone(),
        client_id: def.client_id,
        secret_hash,
        redirect_uris: def.redirect_uris,
        grant_types: def
            .grant_types
            .iter()
            .map(|g: &GrantType| g.as_str().to_owned())
            .collect(),
        scopes,
        policy: def.policy,
        claims: def.claims,
        created_at,
    }
}

/// argon2id on the blocking pool: it takes tens of milliseconds of CPU on purpose.
async fn hash(secret: String) -> Result<String, GatewayError> {
    tokio::task::spawn_blocking(move || secrets::hash_secret(&secret))
        .await
        .map_err(|_| GatewayError::Internal)?
        .map_err(|err| {
            tracing::error!(error = %err, "could not hash a client secret");
            GatewayError::Internal
        })
}

/// A JSON body of at most [`MAX_BODY_BYTES`]; errors name the field (`grant_types[0]: invalid type`).
pub(super) async fn read_json<T: DeserializeOwned, B>(
    req: Request<B>,
    timeout: Duration,
) -> Result<T, GatewayError>
where
    B: hyper::body::Body,
    B::Error: Into<crate::http_util::BoxError>,
{
    let (_, bytes) = read_body(req, MAX_BODY_BYTES, timeout).await?;
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let field = if path == "." { "body" } else { path.as_str() };
        GatewayError::InvalidInput(format!("{field}: {}", err.into_inner()))
    })?;
    de.end()
        .map_err(|err| GatewayError::InvalidInput(format!("body: {err}")))?;
    Ok(value)
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for a path segment.
pub(super) fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_hash_is_a_valid_argon2id_string() {
        // Validation of a confidential client must not fail because of the placeholder.
        assert!(argon2::PasswordHash::new(PLACEHOLDER_HASH).is_ok());
        assert!(PLACEHOLDER_HASH.starts_with("$argon2id$"));
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(encode_segment("movies_app-1.x~"), "movies_app-1.x~");
        assert_eq!(encode_segment("a/b c%"), "a%2Fb%20c%25");
    }
}
