//! Policies through the admin API (docs/design.md §6): `GET, POST /policies`, `GET, PUT, DELETE /policies/{id}`.
//!
//! Two sources share one id namespace:
//! - policies.yaml: listed and readable here (`"read_only": true, "source": "file"`); PUT and DELETE
//!   answer 409 `read_only`, as for static clients: the file is the source of truth and a reload would
//!   undo any change;
//! - stored policies created here (`"source": "store"`): they live in the store (Redis when configured),
//!   and every node applies a change to existing sessions on their next request (`policy`).
//!
//! POST refuses an id that either source has (409 `conflict`); the store's create is atomic, so two
//! nodes creating one id at once cannot both succeed.
//!
//! A body has the shape of a policies.yaml entry, in JSON, and is validated by the same code
//! (`config::accounts::policy`), plus the `access` ids against the running APIs and, for stored ids, the
//! client id rule; every problem is reported as `field: message`, joined by `; `.
//!
//! Deleting a policy that clients still name answers 409 `policy_in_use` with the list of those clients,
//! unless `?force=true`: then the policy is deleted, the dynamic clients' `policy` is cleared, and all of
//! them are on their API's defaults from their next request (the answer lists them). A client that still
//! names a deleted policy (created concurrently, or on another node meanwhile) gets the same treatment
//! at request time: a policy that does not exist is no policy.

use std::path::Path;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::accounts;
use crate::config::check;
use crate::config::error::{FileProblems, Problems, index};
use crate::config::raw::{RawPolicy, RawQuota, RawRateLimit};
use crate::config::{Policy, RuntimeConfig};
use crate::error::{GatewayError, json_response};
use crate::http_util::{Body, empty};
use crate::policy::to_stored;
use crate::proxy::gateway::Gateway;
use crate::store::{PolicyWrite, StoredPolicy};

use super::clients::{CLIENT_WRITES, encode_segment, read_json};
use super::routes::PolicyAction;
use super::{now, storage};

/// The body of POST (create) and PUT (replace): a policies.yaml entry. Unknown fields are refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyBody {
    /// Required on create; on PUT, when present, it must name the policy in the path.
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    rate_limit: Option<RawRateLimit>,
    #[serde(default)]
    quota: Option<RawQuota>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    access: Vec<String>,
}

/// A client that names a policy.
struct PolicyUser {
    api: String,
    client_id: String,
    /// Defined in an API definition file (so its `policy` field cannot be cleared from here).
    read_only: bool,
}

impl PolicyUser {
    fn view(&self) -> Value {
        json!({ "api": self.api, "client_id": self.client_id, "read_only": self.read_only })
    }
}

pub(super) async fn route<B>(
    gateway: &Gateway,
    action: PolicyAction<'_>,
    req: Request<B>,
) -> Result<Response<Body>, GatewayError>
where
    B: hyper::body::Body,
    B::Error: Into<crate::http_util::BoxError>,
{
    let runtime = gateway.runtime();
    let config = &runtime.config;
    match action {
        PolicyAction::List => list(gateway, config).await,
        PolicyAction::Create => {
            create(
                gateway,
                config,
                read_json(req, config.limits.body_read_timeout).await?,
            )
            .await
        }
        PolicyAction::Get(id) => get(gateway, config, id).await,
        PolicyAction::Replace(id) => replace(gateway, config, id, req).await,
        PolicyAction::Delete(id) => {
            let force = force_param(req.uri().query())?;
            delete(gateway, config, id, force).await
        }
    }
}

fn file_policy<'a>(config: &'a RuntimeConfig, id: &str) -> Option<&'a Policy> {
    config.policies.iter().find(|p| p.id == id)
}

fn read_only(id: &str) -> GatewayError {
    GatewayError::ReadOnly(format!(
        "policy `{id}` is defined in policies.yaml; read-only (change the file and reload)"
    ))
}

fn no_such_policy(id: &str) -> GatewayError {
    GatewayError::NoSuchResource(format!("no policy `{id}`"))
}

// --- views

/// A duration in the largest unit that divides it exactly, as policies.yaml writes it (`1s`, `250ms`).
fn format_millis(ms: u64) -> String {
    if ms == 0 {
        return "0ms".to_owned();
    }
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// The policy as a policies.yaml entry in JSON (absent limits are `null`).
fn document(policy: &StoredPolicy) -> Value {
    json!({
        "id": policy.id,
        "rate_limit": policy.rate_limit.as_ref().map(|r| {
            let mut limit = json!({
                "rate": r.rate,
                "per": format_millis(r.per_ms),
                "on_storage_error": r.on_storage_error,
            });
            // Shown only when set, like in policies.yaml, where it is rarely written.
            if r.exact && let Some(obj) = limit.as_object_mut() {
                obj.insert("exact".into(), json!(true));
            }
            limit
        }),
        "quota": policy.quota.as_ref().map(|q| json!({
            "max": q.max,
            "period": format_millis(q.period_ms),
        })),
        "scopes": policy.scopes,
        "access": policy.access,
    })
}

fn file_view(policy: &Policy) -> Value {
    let mut view = document(&to_stored(policy, 0, 0));
    if let Some(obj) = view.as_object_mut() {
        obj.insert("read_only".into(), json!(true));
        obj.insert("source".into(), json!("file"));
    }
    view
}

/// `shadowed`: policies.yaml has a policy with the same id (added after this one was created), which
/// is the one that applies.
fn stored_view(policy: &StoredPolicy, shadowed: bool) -> Value {
    let mut view = document(policy);
    if let Some(obj) = view.as_object_mut() {
        obj.insert("read_only".into(), json!(false));
        obj.insert("source".into(), json!("store"));
        obj.insert("created_at".into(), json!(policy.created_at));
        obj.insert("updated_at".into(), json!(policy.updated_at));
        if shadowed {
            obj.insert("shadowed_by_file".into(), json!(true));
        }
    }
    view
}

// --- handlers

async fn list(gateway: &Gateway, config: &RuntimeConfig) -> Result<Response<Body>, GatewayError> {
    let mut policies: Vec<Value> = config.policies.iter().map(file_view).collect();
    let stored = gateway.auth.store.list_policies().await.map_err(storage)?;
    policies.extend(
        stored
            .iter()
            .map(|p| stored_view(p, file_policy(config, &p.id).is_some())),
    );
    Ok(json_response(
        StatusCode::OK,
        &json!({ "policies": policies }),
    ))
}

async fn get(
    gateway: &Gateway,
    config: &RuntimeConfig,
    id: &str,
) -> Result<Response<Body>, GatewayError> {
    if let Some(policy) = file_policy(config, id) {
        return Ok(json_response(StatusCode::OK, &file_view(policy)));
    }
    // From the store itself, not the proxy's cache: an operator reads what is stored.
    let stored = gateway.auth.store.get_policy(id).await.map_err(storage)?;
    let stored = stored.ok_or_else(|| no_such_policy(id))?;
    Ok(json_response(StatusCode::OK, &stored_view(&stored, false)))
}

async fn create(
    gateway: &Gateway,
    config: &RuntimeConfig,
    body: PolicyBody,
) -> Result<Response<Body>, GatewayError> {
    let id = body
        .id
        .clone()
        .ok_or_else(|| GatewayError::InvalidInput("id: missing field `id`".to_owned()))?;
    let policy = validate(config, id, body)?;
    let taken = |source: &str| {
        GatewayError::Conflict(format!(
            "id: a policy `{}` exists already ({source})",
            policy.id
        ))
    };
    if file_policy(config, &policy.id).is_some() {
        return Err(taken("in policies.yaml"));
    }
    let now = now();
    let stored = to_stored(&policy, now, now);
    let created = gateway
        .auth
        .store
        .put_policy(&stored, PolicyWrite::Create)
        .await
        .map_err(storage)?;
    if !created {
        return Err(taken("in storage"));
    }
    tracing::info!(policy = %stored.id, "policy created");
    let mut response = json_response(StatusCode::CREATED, &stored_view(&stored, false));
    let location = format!("/policies/{}", encode_segment(&stored.id));
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// PUT: replaces a stored policy (absent fields become absent: no limit, no narrowing, no access);
/// its creation time stays. Sessions of its clients see the change on their next request.
async fn replace<B>(
    gateway: &Gateway,
    config: &RuntimeConfig,
    id: &str,
    req: Request<B>,
) -> Result<Response<Body>, GatewayError>
where
    B: hyper::body::Body,
    B::Error: Into<crate::http_util::BoxError>,
{
    // Refused before the body is read: no body makes a file policy writable.
    if file_policy(config, id).is_some() {
        return Err(read_only(id));
    }
    let body: PolicyBody = read_json(req, config.limits.body_read_timeout).await?;
    if body.id.as_deref().is_some_and(|named| named != id) {
        return Err(GatewayError::InvalidInput(format!(
            "id: must be the policy named in the path (`{id}`); a policy cannot be renamed"
        )));
    }
    let policy = validate(config, id.to_owned(), body)?;
    let store = &gateway.auth.store;
    let current = store.get_policy(id).await.map_err(storage)?;
    let current = current.ok_or_else(|| no_such_policy(id))?;
    let updated = to_stored(&policy, current.created_at, now().max(current.created_at));
    // `Replace` writes only if the policy still exists: a DELETE in between is not undone.
    let replaced = store
        .put_policy(&updated, PolicyWrite::Replace)
        .await
        .map_err(storage)?;
    if !replaced {
        return Err(no_such_policy(id));
    }
    tracing::info!(policy = %id, "policy replaced");
    Ok(json_response(StatusCode::OK, &stored_view(&updated, false)))
}

/// DELETE: see the module documentation. The policy is deleted before the clients' references are
/// cleared: from that moment every node puts its clients on their APIs' defaults, so clearing the
/// references only makes the client records say so (if that fails half-way, the rest still resolve
/// to no policy).
async fn delete(
    gateway: &Gateway,
    config: &RuntimeConfig,
    id: &str,
    force: bool,
) -> Result<Response<Body>, GatewayError> {
    if file_policy(config, id).is_some() {
        return Err(read_only(id));
    }
    let store = &gateway.auth.store;
    if store.get_policy(id).await.map_err(storage)?.is_none() {
        return Err(no_such_policy(id));
    }
    // No client create, update or delete of this node interleaves with the check and the clean-up.
    let _guard = CLIENT_WRITES.lock().await;
    let users = clients_using(gateway, config, id).await?;
    if !users.is_empty() && !force {
        let names: Vec<String> = users
            .iter()
            .map(|u| format!("{}/{}", u.api, u.client_id))
            .collect();
        return Err(GatewayError::PolicyInUse {
            description: format!(
                "policy `{id}` is used by {} client(s): {}; move them to another policy first, or \
                 delete with ?force=true to leave them on their APIs' defaults",
                users.len(),
                names.join(", ")
            ),
            clients: users.iter().map(PolicyUser::view).collect(),
        });
    }
    if !store.delete_policy(id).await.map_err(storage)? {
        return Err(no_such_policy(id));
    }
    for user in users.iter().filter(|u| !u.read_only) {
        let client = store
            .get_client(&user.api, &user.client_id)
            .await
            .map_err(storage)?;
        if let Some(mut client) = client
            && client.policy.as_deref() == Some(id)
        {
            client.policy = None;
            store.put_client(&client).await.map_err(storage)?;
        }
    }
    tracing::info!(policy = %id, clients = users.len(), force, "policy deleted");
    if !force {
        let mut response = Response::new(empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        return Ok(response);
    }
    let left: Vec<Value> = users.iter().map(PolicyUser::view).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "deleted": id, "clients_left_on_api_defaults": left }),
    ))
}

/// Every client of a running API that names the policy `id`: static ones from the API definitions and
/// dynamic ones from the store. (The loader lets static clients name only policies.yaml policies, which
/// are never deleted here, so today only dynamic clients are found; static ones are checked anyway so
/// the refusal stays right if that rule is ever relaxed.) Dynamic clients of an API no longer in the
/// configuration cannot be used and are not searched.
async fn clients_using(
    gateway: &Gateway,
    config: &RuntimeConfig,
    id: &str,
) -> Result<Vec<PolicyUser>, GatewayError> {
    let mut users = Vec::new();
    for api in &config.apis {
        let Some(oauth) = &api.oauth else { continue };
        for client in oauth
            .clients
            .iter()
            .filter(|c| c.policy.as_deref() == Some(id))
        {
            users.push(PolicyUser {
                api: api.id.clone(),
                client_id: client.client_id.clone(),
                read_only: true,
            });
        }
        let dynamic = gateway
            .auth
            .store
            .list_clients(&api.id)
            .await
            .map_err(storage)?;
        for client in dynamic.iter().filter(|c| c.policy.as_deref() == Some(id)) {
            users.push(PolicyUser {
                api: api.id.clone(),
                client_id: client.client_id.clone(),
                read_only: false,
            });
        }
    }
    Ok(users)
}

// --- validation

/// The rules of a policy in policies.yaml (the same function), plus what the loader checks across
/// files (`access` names running APIs) and the stored-id rule; every problem as `field: message`.
fn validate(config: &RuntimeConfig, id: String, body: PolicyBody) -> Result<Policy, GatewayError> {
    let raw = RawPolicy {
        id,
        rate_limit: body.rate_limit,
        quota: body.quota,
        scopes: body.scopes,
        access: body.access,
    };
    let mut problems = Problems::default();
    // The file name is never shown: the admin API reports `field: message` only.
    let mut out = FileProblems {
        file: Path::new("request body"),
        problems: &mut problems,
    };
    if !raw.id.is_empty() {
        let _ = out.check("id", check::stored_policy_id(&raw.id));
    }
    let policy = accounts::policy(raw, "", &mut out);
    for (i, api) in policy.access.iter().enumerate() {
        if !config.apis.iter().any(|a| a.id == *api) {
            out.push(&index("access", i), format!("no API with id `{api}`"));
        }
    }
    problems.into_result(policy).map_err(|errors| {
        let lines: Vec<String> = errors
            .problems()
            .iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect();
        GatewayError::InvalidInput(lines.join("; "))
    })
}

/// The optional `force` query parameter of DELETE; any other parameter is refused, naming it.
fn force_param(query: Option<&str>) -> Result<bool, GatewayError> {
    let mut force = None;
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match name.as_ref() {
            "force" if force.is_some() => {
                return Err(GatewayError::InvalidInput(
                    "force: given more than once".to_owned(),
                ));
            }
            "force" => {
                force = Some(match value.as_ref() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(GatewayError::InvalidInput(
                            "force: must be `true` or `false`".to_owned(),
                        ));
                    }
                });
            }
            other => {
                return Err(GatewayError::InvalidInput(format!(
                    "{other}: unknown query parameter (only `force` is accepted)"
                )));
            }
        }
    }
    Ok(force.unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_shown_in_their_largest_exact_unit() {
        assert_eq!(format_millis(1_000), "1s");
        assert_eq!(format_millis(250), "250ms");
        assert_eq!(format_millis(1_500), "1500ms");
        assert_eq!(format_millis(90_000), "90s");
        assert_eq!(format_millis(900_000), "15m");
        assert_eq!(format_millis(86_400_000), "1d");
        assert_eq!(format_millis(30 * 86_400_000), "30d");
    }

    #[test]
    fn only_a_boolean_force_parameter_is_accepted() {
        assert!(!force_param(None).unwrap());
        assert!(force_param(Some("force=true")).unwrap());
        assert!(!force_param(Some("force=false")).unwrap());
        for bad in ["force=yes", "force=1", "force", "force=true&force=true"] {
            let err = force_param(Some(bad)).unwrap_err().to_string();
            assert!(err.starts_with("force: "), "{bad}: {err}");
        }
        let other = force_param(Some("cascade=true")).unwrap_err().to_string();
        assert!(other.starts_with("cascade: unknown"), "{other}");
    }
}
