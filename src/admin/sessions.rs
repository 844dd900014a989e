//! One session through the admin API (docs/design.md §6): `GET /sessions/{sid}` shows it with what is left of
//! its rate limit and quota; `DELETE /sessions/{sid}` revokes it.
//!
//! The limits are the ones the proxy path applies (lifecycle steps 10–11), resolved by the same
//! [`SessionLimits::resolve`]: the client's policy `rate_limit` and `quota`, each replacing the API's
//! own, counted per session across APIs when the policy sets a limit and per session and API otherwise.
//! They are read with `Limiter::peek`, which counts nothing. The API is the session's own (the API that
//! issued it) unless `?api=` names another one the session's tokens are used at.

use http::{Response, StatusCode};
use serde_json::{Value, json};

use crate::config::{ApiDef, Policy, Quota, RateLimit};
use crate::error::{GatewayError, json_response};
use crate::http_util::Body;
use crate::limits::{Headroom, SessionLimits};
use crate::policy;
use crate::proxy::gateway::Gateway;
use crate::store::{GrantKind, Session, StatelessCount};
use crate::token::jwt::LEEWAY_SECS;
use crate::token::sid::parse_stateless_sid;

use super::clients::session_view;
use super::{now, storage};

/// `GET /sessions/{sid}[?api=<api id>]`.
pub(super) async fn get(
    gateway: &Gateway,
    sid: &str,
    query: Option<&str>,
) -> Result<Response<Body>, GatewayError> {
    let requested_api = api_param(query)?;
    let now = now();
    let store = gateway.auth.store.as_ref();
    let (session, stateless) = match store.get_session(sid).await.map_err(storage)? {
        Some(session) => (session, None),
        None => match stateless_session(gateway, sid).await? {
            Some((session, count)) => (session, Some(count)),
            None => return Err(unknown(gateway, sid, now)),
        },
    };
    let runtime = gateway.runtime();
    let config = &runtime.config;
    // The API whose limits are shown: named in the query (it must exist), else the session's own
    // (which may have been removed from the configuration since: then no limits are shown).
    let api: Option<&ApiDef> = match &requested_api {
        Some(id) => Some(
            config
                .apis
                .iter()
                .find(|a| &a.id == id)
                .map(|a| a.as_ref())
                .ok_or_else(|| GatewayError::InvalidInput(format!("api: no API with id `{id}`")))?,
        ),
        None => config
            .apis
            .iter()
            .find(|a| a.id == session.api_id)
            .map(|a| a.as_ref()),
    };
    let policy_id = policy::client_policy_id(config, store, &session.api_id, &session.client_id)
        .await
        .map_err(storage)?;
    // Resolved as the proxy path resolves it: a policy that no longer exists is no policy (the API's
    // defaults apply), so the view shows what the next request will be counted against.
    let policy = policy::resolve(
        &config.policies,
        &gateway.auth.policies,
        policy_id.as_deref(),
    )
    .await
    .map_err(storage)?;
    let (rate_limit, quota) = match api {
        Some(api) => limits(gateway, policy.as_deref(), api, &session.sid, now).await?,
        None => (None, None),
    };
    // A stateless session counts as revoked when its latest token was issued before its client's
    // cutoff.
    let cut = store
        .client_cutoff(&session.api_id, &session.client_id, now)
        .is_some_and(|cutoff| session.created_at <= cutoff);
    let revoked = store.is_revoked(&session.sid, "", now) || (stateless.is_some() && cut);
    let limits = Limits {
        api: api.map(|a| a.id.as_str()),
        rate_limit,
        quota,
    };
    let mut body = view(&session, policy.as_ref(), revoked, now, limits);
    if let (Some(count), Some(obj)) = (stateless, body.as_object_mut()) {
        // Each token carries its own scope; nothing stored says which.
        obj.insert("scope".into(), Value::Null);
        obj.insert("scopes".into(), Value::Null);
        obj.insert("stateless".into(), json!(true));
        obj.insert("issued".into(), json!(count.issued));
        obj.insert("created_at".into(), Value::Null);
        obj.insert("last_issued_at".into(), json!(count.last_issued_at));
    }
    Ok(json_response(StatusCode::OK, &body))
}

/// A stateless session (docs/design.md §9f) as far as it can be known without a record: the names its id
/// spells out, the client's count of stateless tokens, and an expiry after the latest one (which
/// `created_at` holds here). `None` when the id is not a stateless one or names an unknown API.
async fn stateless_session(
    gateway: &Gateway,
    sid: &str,
) -> Result<Option<(Session, StatelessCount)>, GatewayError> {
    let Some((api_id, client_id, username)) = parse_stateless_sid(sid) else {
        return Ok(None);
    };
    let runtime = gateway.runtime();
    let Some(oauth) = runtime
        .config
        .apis
        .iter()
        .find(|a| a.id == api_id)
        .and_then(|a| a.oauth.as_ref())
    else {
        return Ok(None);
    };
    let count = gateway
        .auth
        .store
        .stateless_count(&api_id, &client_id)
        .await
        .map_err(storage)?;
    let latest = count.last_issued_at.unwrap_or(0);
    let grant = if username.is_some() {
        GrantKind::Password
    } else {
        GrantKind::ClientCredentials
    };
    Ok(Some((
        Session {
            sid: sid.to_string(),
            api_id,
            client_id,
            username,
            scope: String::new(),
            grant,
            created_at: latest,
            last_refresh_at: None,
            refresh_count: 0,
            expires_at: latest + oauth.access_token_ttl.as_secs() + LEEWAY_SECS,
            oidc: None,
        },
        count,
    )))
}

/// The session's rate limit and quota at `api` as views, by the proxy path's rules, without counting.
async fn limits(
    gateway: &Gateway,
    policy: Option<&Policy>,
    api: &ApiDef,
    sid: &str,
    now: u64,
) -> Result<(Option<Value>, Option<Value>), GatewayError> {
    let applied = SessionLimits::resolve(policy, api, sid);
    if applied.rate.is_none() && applied.quota.is_none() {
        return Ok((None, None));
    }
    let decision = gateway
        .limiter
        .peek(
            &applied.key,
            applied.rate.as_ref(),
            applied.quota.as_ref(),
            now,
        )
        .await
        .map_err(storage)?;
    let source = |from_policy: bool| if from_policy { "policy" } else { "api" };
    let rate_source = source(policy.is_some_and(|p| p.rate_limit.is_some()));
    let quota_source = source(policy.is_some_and(|p| p.quota.is_some()));
    Ok((
        applied
            .rate
            .map(|r| rate_view(&r, rate_source, decision.rate)),
        applied
            .quota
            .map(|q| quota_view(&q, quota_source, decision.quota)),
    ))
}

/// The optional `api` query parameter; any other parameter is refused, naming it.
fn api_param(query: Option<&str>) -> Result<Option<String>, GatewayError> {
    let mut api = None;
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match name.as_ref() {
            "api" if api.is_none() => api = Some(value.into_owned()),
            "api" => {
                return Err(GatewayError::InvalidInput(
                    "api: given more than once".to_owned(),
                ));
            }
            other => {
                return Err(GatewayError::InvalidInput(format!(
                    "{other}: unknown query parameter (only `api` is accepted)"
                )));
            }
        }
    }
    Ok(api)
}

/// `DELETE /sessions/{sid}`: revokes the session until it would have expired anyway, so its refresh
/// tokens stop at once and its access tokens fail the proxy's revocation check.
pub(super) async fn revoke(gateway: &Gateway, sid: &str) -> Result<Response<Body>, GatewayError> {
    let now = now();
    let store = gateway.auth.store.as_ref();
    match store.get_session(sid).await.map_err(storage)? {
        None if parse_stateless_sid(sid).is_some() => {
            return Err(GatewayError::InvalidInput(format!(
                "session `{sid}` is stateless: nothing is stored to revoke. Revoke one token at the API's oauth/revoke endpoint, or every token of the client with DELETE /apis/{{api}}/clients/{{id}}/sessions"
            )));
        }
        Some(session) => {
            store
                .revoke_session(&session.sid, session.expires_at)
                .await
                .map_err(storage)?;
            tracing::info!(sid = %session.sid, api = %session.api_id, client = %session.client_id, "session revoked");
        }
        // Revoked before: the store may have forgotten the record already. Revoking is idempotent.
        None if store.is_revoked(sid, "", now) => {}
        None => return Err(unknown(gateway, sid, now)),
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({ "sid": sid, "revoked": true }),
    ))
}

/// 404 for a session the store does not have, saying so when it was revoked.
fn unknown(gateway: &Gateway, sid: &str, now: u64) -> GatewayError {
    if gateway.auth.store.is_revoked(sid, "", now) {
        GatewayError::NoSuchResource(format!("session `{sid}` was revoked"))
    } else {
        GatewayError::NoSuchResource(format!("no session `{sid}`"))
    }
}

/// `remaining` and `reset_secs` are `null` when the limiter cannot tell without counting.
fn rate_view(rate: &RateLimit, source: &str, headroom: Option<Headroom>) -> Value {
    json!({
        "rate": rate.rate,
        "per_ms": u64::try_from(rate.per.as_millis()).unwrap_or(u64::MAX),
        "source": source,
        "remaining": headroom.map(|h| h.remaining),
        "reset_secs": headroom.map(|h| h.reset_secs),
    })
}

fn quota_view(quota: &Quota, source: &str, headroom: Option<Headroom>) -> Value {
    json!({
        "max": quota.max,
        // The limiters count a period under one second as one second.
        "period_secs": quota.period.as_secs().max(1),
        "source": source,
        "remaining": headroom.map(|h| h.remaining),
        "reset_secs": headroom.map(|h| h.reset_secs),
    })
}

/// The limits shown with a session: at which API, and the two views (`None`: the limit does not apply).
struct Limits<'a> {
    api: Option<&'a str>,
    rate_limit: Option<Value>,
    quota: Option<Value>,
}

fn view(
    session: &Session,
    policy: Option<&policy::Resolved<'_>>,
    revoked: bool,
    now: u64,
    limits: Limits<'_>,
) -> Value {
    let mut view = session_view(session);
    if let Some(obj) = view.as_object_mut() {
        let scopes: Vec<&str> = session.scope.split_whitespace().collect();
        obj.insert("api".into(), json!(session.api_id));
        obj.insert("client_id".into(), json!(session.client_id));
        obj.insert("scopes".into(), json!(scopes));
        obj.insert("policy".into(), json!(policy.map(|p| p.id.as_str())));
        obj.insert("policy_source".into(), json!(policy.map(|p| p.source())));
        obj.insert("revoked".into(), json!(revoked));
        obj.insert("active".into(), json!(!revoked && now < session.expires_at));
        obj.insert("limits_api".into(), json!(limits.api));
        obj.insert("rate_limit".into(), json!(limits.rate_limit));
        obj.insert("quota".into(), json!(limits.quota));
    }
    view
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::OnStorageError;
    use crate::store::GrantKind;

    fn session() -> Session {
        Session {
            sid: "s1".into(),
            api_id: "movies".into(),
            client_id: "app".into(),
            username: Some("alice".into()),
            scope: "read write".into(),
            grant: GrantKind::Password,
            created_at: 100,
            last_refresh_at: Some(150),
            refresh_count: 1,
            expires_at: 1000,
            oidc: None,
        }
    }

    #[test]
    fn only_the_api_query_parameter_is_accepted() {
        assert_eq!(api_param(None).unwrap(), None);
        assert_eq!(api_param(Some("")).unwrap(), None);
        assert_eq!(
            api_param(Some("api=films%2Fnew")).unwrap().as_deref(),
            Some("films/new")
        );
        let twice = api_param(Some("api=a&api=b")).unwrap_err().to_string();
        assert!(twice.starts_with("api: "), "{twice}");
        let other = api_param(Some("apj=a")).unwrap_err().to_string();
        assert!(other.starts_with("apj: unknown"), "{other}");
    }

    #[test]
    fn the_view_shows_the_session_and_its_limits() {
        let rate = RateLimit {
            rate: 5,
            per: Duration::from_millis(500),
            on_storage_error: OnStorageError::Local,
            exact: false,
        };
        let quota = Quota {
            max: 10,
            period: Duration::from_secs(86_400),
        };
        let headroom = Headroom {
            limit: 10,
            remaining: 7,
            reset_secs: 80_000,
        };
        let limits = Limits {
            api: Some("movies"),
            rate_limit: Some(rate_view(&rate, "policy", None)),
            quota: Some(quota_view(&quota, "api", Some(headroom))),
        };
        let gold = Policy {
            id: "gold".into(),
            rate_limit: Some(rate),
            quota: None,
            scopes: None,
            access: vec![],
        };
        let resolved = policy::Resolved::File(&gold);
        let view = view(&session(), Some(&resolved), false, 200, limits);
        assert_eq!(view["sid"], "s1");
        assert_eq!(view["api"], "movies");
        assert_eq!(view["client_id"], "app");
        assert_eq!(view["username"], "alice");
        assert_eq!(view["scopes"], json!(["read", "write"]));
        assert_eq!(view["scope"], "read write");
        assert_eq!(view["policy"], "gold");
        assert_eq!(view["policy_source"], "file");
        assert_eq!(view["refresh_count"], 1);
        assert_eq!(view["last_refresh_at"], 150);
        assert_eq!(view["active"], true);
        assert_eq!(view["limits_api"], "movies");
        assert_eq!(
            view["rate_limit"],
            json!({"rate": 5, "per_ms": 500, "source": "policy", "remaining": null, "reset_secs": null})
        );
        assert_eq!(
            view["quota"],
            json!({"max": 10, "period_secs": 86_400, "source": "api", "remaining": 7, "reset_secs": 80_000})
        );
    }

    #[test]
    fn no_limits_and_inactive_sessions() {
        let none = || Limits {
            api: None,
            rate_limit: None,
            quota: None,
        };
        let view = view(&session(), None, true, 200, none());
        assert_eq!(view["policy"], Value::Null);
        assert_eq!(view["policy_source"], Value::Null);
        assert_eq!(view["rate_limit"], Value::Null);
        assert_eq!(view["quota"], Value::Null);
        assert_eq!(view["revoked"], true);
        assert_eq!(view["active"], false);
        assert_eq!(view["limits_api"], Value::Null);
        let expired = super::view(&session(), None, false, 1000, none());
        assert_eq!(expired["active"], false);
    }
}
