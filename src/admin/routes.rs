//! The admin API's route table: every route the admin listener serves, as data.
//!
//! [`ROUTES`] is the router itself, not a description of it: a request is matched against these
//! templates and nothing else, so a route cannot be served without being listed here. The OpenAPI
//! document (`docs/admin-openapi.json`, served at `GET /openapi.json`) is checked against this table by
//! a test, so a route cannot be listed here without being documented either.
//!
//! Templates use OpenAPI's syntax: a `{name}` segment matches any one path segment, after
//! percent-decoding (`/apis/movies/clients/a%2Fb` names the client `a/b`).

use http::Method;

/// One route: a method and a path template, and the handler that serves it.
#[derive(Debug)]
pub struct Route {
    pub method: Method,
    /// OpenAPI path template, e.g. `/apis/{api}/clients/{client_id}`.
    pub path: &'static str,
    pub(crate) handler: Handler,
}

/// Which handler serves a route; [`Handler::bind`] pairs it with the route's path parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handler {
    Health,
    Metrics,
    Stats,
    Apis,
    Targets,
    Reload,
    OpenApi,
    AuthorizeClient,
    ListClients,
    CreateClient,
    GetClient,
    ReplaceClient,
    DeleteClient,
    RotateSecret,
    ClientSessions,
    RevokeClientSessions,
    ListPolicies,
    CreatePolicy,
    GetPolicy,
    ReplacePolicy,
    DeletePolicy,
    GetSession,
    RevokeSession,
    UserLoginSessions,
    EndUserLoginSessions,
}

const fn route(method: Method, path: &'static str, handler: Handler) -> Route {
    Route {
        method,
        path,
        handler,
    }
}

/// Every route of the admin API, in the order of docs/design.md §6.
pub const ROUTES: &[Route] = &[
    route(Method::GET, "/health", Handler::Health),
    route(Method::GET, "/metrics", Handler::Metrics),
    route(Method::GET, "/stats", Handler::Stats),
    route(Method::GET, "/apis", Handler::Apis),
    route(Method::GET, "/apis/{api}/targets", Handler::Targets),
    route(Method::POST, "/reload", Handler::Reload),
    route(Method::GET, "/openapi.json", Handler::OpenApi),
    route(Method::GET, "/apis/{api}/clients", Handler::ListClients),
    route(Method::POST, "/apis/{api}/clients", Handler::CreateClient),
    route(
        Method::GET,
        "/apis/{api}/clients/{client_id}",
        Handler::GetClient,
    ),
    route(
        Method::PUT,
        "/apis/{api}/clients/{client_id}",
        Handler::ReplaceClient,
    ),
    route(
        Method::DELETE,
        "/apis/{api}/clients/{client_id}",
        Handler::DeleteClient,
    ),
    route(
        Method::POST,
        "/apis/{api}/clients/{client_id}/rotate-secret",
        Handler::RotateSecret,
    ),
    route(
        Method::GET,
        "/apis/{api}/clients/{client_id}/sessions",
        Handler::ClientSessions,
    ),
    route(
        Method::DELETE,
        "/apis/{api}/clients/{client_id}/sessions",
        Handler::RevokeClientSessions,
    ),
    route(Method::GET, "/policies", Handler::ListPolicies),
    route(Method::POST, "/policies", Handler::CreatePolicy),
    route(Method::GET, "/policies/{id}", Handler::GetPolicy),
    route(Method::PUT, "/policies/{id}", Handler::ReplacePolicy),
    route(Method::DELETE, "/policies/{id}", Handler::DeletePolicy),
    route(Method::GET, "/sessions/{sid}", Handler::GetSession),
    route(Method::DELETE, "/sessions/{sid}", Handler::RevokeSession),
    route(
        Method::GET,
        "/users/{username}/login-sessions",
        Handler::UserLoginSessions,
    ),
    route(
        Method::DELETE,
        "/users/{username}/login-sessions",
        Handler::EndUserLoginSessions,
    ),
    route(
        Method::POST,
        "/apis/{api}/oauth/authorize-client",
        Handler::AuthorizeClient,
    ),
];

/// A routed request: the handler with its path parameters, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call<'a> {
    Health,
    Metrics,
    Stats,
    Apis,
    Targets {
        api: &'a str,
    },
    Reload,
    OpenApi,
    AuthorizeClient {
        api: &'a str,
    },
    Client {
        api: &'a str,
        action: ClientAction<'a>,
    },
    Policy(PolicyAction<'a>),
    GetSession {
        sid: &'a str,
    },
    RevokeSession {
        sid: &'a str,
    },
    UserLoginSessions {
        username: &'a str,
    },
    EndUserLoginSessions {
        username: &'a str,
    },
}

/// What to do under `/apis/{api}/clients`; the `&str` is the client id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientAction<'a> {
    List,
    Create,
    Get(&'a str),
    Replace(&'a str),
    Delete(&'a str),
    RotateSecret(&'a str),
    Sessions(&'a str),
    RevokeSessions(&'a str),
}

/// What to do under `/policies`; the `&str` is the policy id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PolicyAction<'a> {
    List,
    Create,
    Get(&'a str),
    Replace(&'a str),
    Delete(&'a str),
}

impl Handler {
    /// Pairs the handler with the parameters its template captured, in order. `None` when their
    /// number does not fit the handler: a mistake in [`ROUTES`], which a unit test rules out.
    pub(crate) fn bind<'a>(self, params: &[&'a str]) -> Option<Call<'a>> {
        use ClientAction as A;
        let client = |api: &'a str, action| Call::Client { api, action };
        Some(match (self, params) {
            (Handler::Health, []) => Call::Health,
            (Handler::Metrics, []) => Call::Metrics,
            (Handler::Stats, []) => Call::Stats,
            (Handler::Apis, []) => Call::Apis,
            (Handler::Targets, [api]) => Call::Targets { api },
            (Handler::Reload, []) => Call::Reload,
            (Handler::OpenApi, []) => Call::OpenApi,
            (Handler::AuthorizeClient, [api]) => Call::AuthorizeClient { api },
            (Handler::ListClients, [api]) => client(api, A::List),
            (Handler::CreateClient, [api]) => client(api, A::Create),
            (Handler::GetClient, [api, id]) => client(api, A::Get(id)),
            (Handler::ReplaceClient, [api, id]) => client(api, A::Replace(id)),
            (Handler::DeleteClient, [api, id]) => client(api, A::Delete(id)),
            (Handler::RotateSecret, [api, id]) => client(api, A::RotateSecret(id)),
            (Handler::ClientSessions, [api, id]) => client(api, A::Sessions(id)),
            (Handler::RevokeClientSessions, [api, id]) => client(api, A::RevokeSessions(id)),
            (Handler::ListPolicies, []) => Call::Policy(PolicyAction::List),
            (Handler::CreatePolicy, []) => Call::Policy(PolicyAction::Create),
            (Handler::GetPolicy, [id]) => Call::Policy(PolicyAction::Get(id)),
            (Handler::ReplacePolicy, [id]) => Call::Policy(PolicyAction::Replace(id)),
            (Handler::DeletePolicy, [id]) => Call::Policy(PolicyAction::Delete(id)),
            (Handler::GetSession, [sid]) => Call::GetSession { sid },
            (Handler::RevokeSession, [sid]) => Call::RevokeSession { sid },
            (Handler::UserLoginSessions, [username]) => Call::UserLoginSessions { username },
            (Handler::EndUserLoginSessions, [username]) => Call::EndUserLoginSessions { username },
            _ => return None,
        })
    }
}

/// Why a request matched no route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unrouted {
    /// No template matches the path.
    NotFound,
    /// Templates match the path, but for other methods (for the `Allow` header).
    MethodNotAllowed(Vec<Method>),
}

/// Finds the route for `method` and the decoded path `segments`; returns its handler and the
/// segments its `{placeholders}` captured, in order.
pub(crate) fn resolve<'a>(
    method: &Method,
    segments: &[&'a str],
) -> Result<(Handler, Vec<&'a str>), Unrouted> {
    let mut allowed = Vec::new();
    for route in ROUTES {
        let Some(params) = match_template(route.path, segments) else {
            continue;
        };
        if route.method == method {
            return Ok((route.handler, params));
        }
        if !allowed.contains(&route.method) {
            allowed.push(route.method.clone());
        }
    }
    if allowed.is_empty() {
        Err(Unrouted::NotFound)
    } else {
        Err(Unrouted::MethodNotAllowed(allowed))
    }
}

/// The segments captured by the template's placeholders, when the path matches it.
fn match_template<'a>(template: &str, segments: &[&'a str]) -> Option<Vec<&'a str>> {
    let parts: Vec<&str> = template_segments(template).collect();
    if parts.len() != segments.len() {
        return None;
    }
    let mut params = Vec::new();
    for (part, segment) in parts.iter().zip(segments) {
        if is_placeholder(part) {
            params.push(*segment);
        } else if part != segment {
            return None;
        }
    }
    Some(params)
}

fn template_segments(template: &str) -> impl Iterator<Item = &str> {
    template
        .trim_start_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
}

fn is_placeholder(part: &str) -> bool {
    part.len() > 2 && part.starts_with('{') && part.ends_with('}')
}

/// The placeholder names of a template, in order (`/apis/{api}/clients` → `["api"]`).
pub fn placeholders(template: &str) -> Vec<&str> {
    template_segments(template)
        .filter(|p| is_placeholder(p))
        .map(|p| &p[1..p.len() - 1])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A concrete path for a template: each placeholder replaced by a value unlike any literal.
    fn instantiate(template: &str) -> Vec<String> {
        template_segments(template)
            .map(|p| {
                if is_placeholder(p) {
                    format!("value-of-{}", &p[1..p.len() - 1])
                } else {
                    p.to_owned()
                }
            })
            .collect()
    }

    #[test]
    fn every_route_binds_its_placeholders_to_its_handler() {
        for route in ROUTES {
            let names = placeholders(route.path);
            let values: Vec<String> = names.iter().map(|n| format!("value-of-{n}")).collect();
            let values: Vec<&str> = values.iter().map(String::as_str).collect();
            assert!(
                route.handler.bind(&values).is_some(),
                "{} {}: the handler {:?} does not take the parameters {names:?}",
                route.method,
                route.path,
                route.handler
            );
            // And not a different number of them.
            let mut one_more = values.clone();
            one_more.push("extra");
            assert!(route.handler.bind(&one_more).is_none(), "{}", route.path);
        }
    }

    #[test]
    fn every_route_is_reached_by_its_own_path_and_method() {
        for route in ROUTES {
            let path = instantiate(route.path);
            let segments: Vec<&str> = path.iter().map(String::as_str).collect();
            let (handler, params) = resolve(&route.method, &segments)
                .unwrap_or_else(|e| panic!("{} {}: {e:?}", route.method, route.path));
            assert_eq!(handler, route.handler, "{} {}", route.method, route.path);
            let names = placeholders(route.path);
            let expected: Vec<String> = names.iter().map(|n| format!("value-of-{n}")).collect();
            assert_eq!(params, expected, "{}", route.path);
        }
    }

    #[test]
    fn routes_are_unique_and_well_formed() {
        for (i, a) in ROUTES.iter().enumerate() {
            assert!(
                a.path.starts_with('/') && !a.path.ends_with('/'),
                "{}",
                a.path
            );
            for b in &ROUTES[i + 1..] {
                assert!(
                    !(a.method == b.method && a.path == b.path),
                    "{} {} is listed twice",
                    a.method,
                    a.path
                );
            }
        }
    }

    #[test]
    fn a_bound_call_carries_the_parameters_by_name() {
        assert_eq!(
            Handler::RotateSecret.bind(&["movies", "app"]),
            Some(Call::Client {
                api: "movies",
                action: ClientAction::RotateSecret("app")
            })
        );
        assert_eq!(
            Handler::GetSession.bind(&["s1"]),
            Some(Call::GetSession { sid: "s1" })
        );
        assert_eq!(
            Handler::DeletePolicy.bind(&["gold"]),
            Some(Call::Policy(PolicyAction::Delete("gold")))
        );
        assert_eq!(Handler::Health.bind(&["x"]), None);
    }

    #[test]
    fn unknown_paths_are_404_and_other_methods_405_with_allow() {
        assert_eq!(resolve(&Method::GET, &["nope"]), Err(Unrouted::NotFound));
        assert_eq!(resolve(&Method::GET, &[]), Err(Unrouted::NotFound));
        assert_eq!(
            resolve(&Method::GET, &["apis", "movies", "clients", "a", "other"]),
            Err(Unrouted::NotFound)
        );
        assert_eq!(
            resolve(&Method::PATCH, &["apis", "movies", "clients", "app"]),
            Err(Unrouted::MethodNotAllowed(vec![
                Method::GET,
                Method::PUT,
                Method::DELETE
            ]))
        );
        assert_eq!(
            resolve(&Method::PATCH, &["policies", "gold"]),
            Err(Unrouted::MethodNotAllowed(vec![
                Method::GET,
                Method::PUT,
                Method::DELETE
            ]))
        );
        assert_eq!(
            resolve(&Method::GET, &["reload"]),
            Err(Unrouted::MethodNotAllowed(vec![Method::POST]))
        );
        // A literal segment is never taken for a placeholder value or the other way round.
        assert_eq!(
            resolve(
                &Method::GET,
                &["apis", "movies", "clients", "app", "sessions"]
            ),
            Ok((Handler::ClientSessions, vec!["movies", "app"]))
        );
        assert_eq!(
            resolve(&Method::GET, &["sessions", "clients"]),
            Ok((Handler::GetSession, vec!["clients"]))
        );
    }

    #[test]
    fn placeholders_are_named_in_order() {
        assert_eq!(
            placeholders("/apis/{api}/clients/{client_id}/sessions"),
            ["api", "client_id"]
        );
        assert!(placeholders("/health").is_empty());
    }
}
