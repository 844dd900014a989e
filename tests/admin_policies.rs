//! Policies as data (docs/design.md §6): `GET, POST /policies`, `GET, PUT, DELETE /policies/{id}`.
//! A policy created or changed through the admin API applies to existing sessions on their next
//! request: its rate limit, quota, scopes and API access. Every scenario runs over real sockets
//! twice: with the in-memory store and with Redis (a real redis-server started by the harness, one
//! key prefix per test).

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use common::redis::{RedisServer, unique_prefix};
use common::*;
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};

/// The movies API's own rate limit: what a client without a (live) policy gets.
const MOVIES_RATE: u64 = 5;

/// Where a test's gateways keep their state.
struct Storage {
    /// The `storage:` block of gateway.yaml (empty: the in-memory default).
    yaml: String,
    redis: Option<(&'static RedisServer, String)>,
}

impl Storage {
    fn memory() -> Storage {
        Storage {
            yaml: String::new(),
            redis: None,
        }
    }

    /// The test binary's redis-server, under a key prefix of this test's own.
    fn redis() -> Storage {
        static SERVER: OnceLock<RedisServer> = OnceLock::new();
        let server = SERVER.get_or_init(RedisServer::start);
        let prefix = unique_prefix();
        Storage {
            yaml: server.storage_yaml(&prefix, "1s"),
            redis: Some((server, prefix)),
        }
    }
}

/// One signing key for every gateway of the test binary, so that nodes sharing a store accept each
/// other's tokens.
fn signing_key() -> &'static str {
    static KEY: OnceLock<String> = OnceLock::new();
    KEY.get_or_init(|| {
        tollgate::token::keys::generate_pkcs8_pem(tollgate::config::SigningAlgorithm::Es256)
            .expect("generate a signing key")
    })
}

/// `movies`: an OAuth API (client_credentials; scopes read, write) with a rate limit of its own of
/// [`MOVIES_RATE`] a minute per session. `books`: no authorization server of its own, requires the
/// scope `write`, and accepts no other API's tokens except through a client's policy `access`.
/// policies.yaml has one policy, `bronze`.
async fn node(storage: &Storage, upstream: &Upstream) -> TestGateway {
    let config = ConfigDir::new(&format!("policies: policies.yaml\n{}", storage.yaml));
    let key = config.path().join("keys/signing.pem");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    tollgate::token::keys::write_private_key(&key, signing_key()).expect("write the key");
    config.write(
        "policies.yaml",
        "- id: bronze\n  quota: { max: 1000, period: 1d }\n  access: [movies]\n",
    );
    config.api(
        "movies",
        &format!(
            r#"listen_path: /movies/
upstream: {{ url: "{}" }}
auth: {{ type: oauth2 }}
rate_limit: {{ rate: {MOVIES_RATE}, per: 1m }}
oauth:
  grant_types: [client_credentials]
  scopes: [read, write]
"#,
            upstream.url()
        ),
    );
    config.api(
        "books",
        &format!(
            "listen_path: /books/\nupstream: {{ url: \"{}\" }}\nauth: {{ type: oauth2, required_scopes: [write] }}\n",
            upstream.url()
        ),
    );
    TestGateway::start(config).await
}

async fn gateway(storage: &Storage) -> (TestGateway, Upstream) {
    let upstream = Upstream::start().await;
    (node(storage, &upstream).await, upstream)
}

// --- helpers

fn text(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"))
}

fn assert_error(response: &TestResponse, status: u16, error: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    assert_eq!(response.json()["error"], error, "{}", response.text());
}

/// A 400 whose description begins with the field at fault.
fn assert_invalid(response: &TestResponse, field: &str) {
    assert_error(response, 400, "invalid_request");
    let description = response.json()["error_description"].clone();
    assert!(
        text(&description).starts_with(&format!("{field}: ")),
        "expected the description to name `{field}`: {description}"
    );
}

async fn create_policy(gw: &TestGateway, body: Value) -> Value {
    let response = gw.admin_send("POST", "/policies", Some(&body)).await;
    assert_eq!(response.status, 201, "{}", response.text());
    response.json()
}

async fn replace_policy(gw: &TestGateway, id: &str, body: Value) -> Value {
    let response = gw
        .admin_send("PUT", &format!("/policies/{id}"), Some(&body))
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

/// A confidential client_credentials client of `movies` with scopes read and write: (id, secret).
async fn create_client(gw: &TestGateway, policy: Option<&str>) -> (String, String) {
    let body = json!({
        "grant_types": ["client_credentials"],
        "scopes": ["read", "write"],
        "policy": policy,
    });
    let response = gw
        .admin_send("POST", "/apis/movies/clients", Some(&body))
        .await;
    assert_eq!(response.status, 201, "{}", response.text());
    let client = response.json();
    (
        text(&client["client_id"]).to_owned(),
        text(&client["client_secret"]).to_owned(),
    )
}

/// A client_credentials access token (scope: everything the client may have).
async fn token(gw: &TestGateway, (client_id, secret): &(String, String)) -> String {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:{secret}"));
    let response = send(
        Request::post(gw.url("/movies/oauth/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", format!("Basic {basic}"))
            .body(Full::new(Bytes::from("grant_type=client_credentials")))
            .unwrap(),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    text(&response.json()["access_token"]).to_owned()
}

async fn call(gw: &TestGateway, api: &str, token: &str) -> TestResponse {
    get_with(
        &gw.url(&format!("/{api}/items")),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
}

/// A claim of an access token (read, not verified: the gateway verifies).
fn claim(access_token: &str, name: &str) -> String {
    let payload = access_token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    let claims: Value = serde_json::from_slice(&bytes).expect("claims");
    text(&claims[name]).to_owned()
}

fn sid_claim(access_token: &str) -> String {
    claim(access_token, "sid")
}

async fn session(gw: &TestGateway, sid: &str) -> Value {
    let response = gw.admin_get(&format!("/sessions/{sid}")).await;
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

fn ids(list: &Value) -> Vec<&str> {
    list["policies"]
        .as_array()
        .expect("policies")
        .iter()
        .map(|p| text(&p["id"]))
        .collect()
}

// --- scenarios, each run against both stores

/// The scenario of the issue: a session exhausts its stored policy's rate limit, the operator
/// raises the limit, and the session's very next request passes under the new limit.
async fn raising_a_policy_rate_limit_lets_the_next_request_through(storage: Storage) {
    let (gw, upstream) = gateway(&storage).await;
    let gold = create_policy(
        &gw,
        json!({"id": "gold", "rate_limit": {"rate": 2, "per": "1m"}, "quota": {"max": 100, "period": "1d"}}),
    )
    .await;
    assert_eq!(gold["source"], "store");
    assert_eq!(gold["read_only"], false);
    let client = create_client(&gw, Some("gold")).await;
    let access = token(&gw, &client).await;

    for _ in 0..2 {
        let response = call(&gw, "movies", &access).await;
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(response.header("x-ratelimit-limit"), Some("2"));
    }
    let limited = call(&gw, "movies", &access).await;
    assert_error(&limited, 429, "rate_limited");
    assert!(limited.header("retry-after").is_some());
    assert_eq!(upstream.count(), 2);

    let raised = replace_policy(
        &gw,
        "gold",
        json!({"rate_limit": {"rate": 10, "per": "1m"}, "quota": {"max": 100, "period": "1d"}}),
    )
    .await;
    assert_eq!(
        raised["rate_limit"],
        json!({"rate": 10, "per": "1m", "on_storage_error": "local"})
    );
    assert_eq!(raised["created_at"], gold["created_at"]);

    let next = call(&gw, "movies", &access).await;
    assert_eq!(
        next.status,
        200,
        "the raised limit applies at once: {}",
        next.text()
    );
    assert_eq!(next.header("x-ratelimit-limit"), Some("10"));
    assert_eq!(upstream.count(), 3);

    // Lowered again, the new limit holds the session back on its next request as well.
    replace_policy(&gw, "gold", json!({"rate_limit": {"rate": 1, "per": "1h"}})).await;
    assert_eq!(call(&gw, "movies", &access).await.status, 200);
    assert_error(&call(&gw, "movies", &access).await, 429, "rate_limited");
}

/// `GET /sessions/{sid}` shows the stored policy and what the proxy path counted under it.
async fn session_lookup_shows_the_stored_policy_and_the_counts_the_proxy_used(storage: Storage) {
    let (gw, _upstream) = gateway(&storage).await;
    create_policy(
        &gw,
        json!({"id": "gold", "rate_limit": {"rate": 3, "per": "1m"}, "quota": {"max": 50, "period": "1d"}}),
    )
    .await;
    let client = create_client(&gw, Some("gold")).await;
    let access = token(&gw, &client).await;
    let sid = sid_claim(&access);
    for _ in 0..3 {
        assert_eq!(call(&gw, "movies", &access).await.status, 200);
    }
    // Refused by the rate limit: counted against neither limit.
    assert_eq!(call(&gw, "movies", &access).await.status, 429);

    let view = session(&gw, &sid).await;
    assert_eq!(view["policy"], "gold", "{view}");
    assert_eq!(view["policy_source"], "store", "{view}");
    assert_eq!(view["rate_limit"]["rate"], 3, "{view}");
    assert_eq!(view["rate_limit"]["per_ms"], 60_000, "{view}");
    assert_eq!(view["rate_limit"]["source"], "policy", "{view}");
    // The in-memory limiter cannot tell a rate's headroom without counting (null); Redis can.
    let remaining = &view["rate_limit"]["remaining"];
    assert!(remaining.is_null() || remaining == 0, "{view}");
    assert_eq!(view["quota"]["max"], 50, "{view}");
    assert_eq!(view["quota"]["source"], "policy", "{view}");
    assert_eq!(view["quota"]["remaining"], 47, "{view}");

    // A raised quota shows at once, with the count kept; the raised rate starts afresh.
    replace_policy(
        &gw,
        "gold",
        json!({"rate_limit": {"rate": 5, "per": "1m"}, "quota": {"max": 80, "period": "1d"}}),
    )
    .await;
    assert_eq!(call(&gw, "movies", &access).await.status, 200);
    let view = session(&gw, &sid).await;
    assert_eq!(view["rate_limit"]["rate"], 5, "{view}");
    assert_eq!(view["quota"]["max"], 80, "{view}");
    assert_eq!(view["quota"]["remaining"], 80 - 4, "{view}");
}

/// Multi-API access through a stored policy, and its scopes, change for existing tokens at once.
async fn changing_a_policy_access_or_scopes_applies_to_existing_tokens(storage: Storage) {
    let (gw, upstream) = gateway(&storage).await;
    // Tokens are issued narrowed by a stored policy's scopes, as by a file policy's.
    create_policy(
        &gw,
        json!({"id": "reader", "scopes": ["read"], "access": ["books"]}),
    )
    .await;
    let reader = create_client(&gw, Some("reader")).await;
    let narrow = token(&gw, &reader).await;
    assert_eq!(claim(&narrow, "scope"), "read");
    assert_error(
        &call(&gw, "books", &narrow).await,
        403,
        "insufficient_scope",
    );

    create_policy(&gw, json!({"id": "multi", "access": ["movies", "books"]})).await;
    let client = create_client(&gw, Some("multi")).await;
    let access = token(&gw, &client).await;
    assert_eq!(claim(&access, "scope"), "read write");
    // A movies token, accepted by books only because the policy grants books.
    assert_eq!(call(&gw, "books", &access).await.status, 200);
    assert_eq!(call(&gw, "movies", &access).await.status, 200);

    // Narrowed scopes: books requires `write`, which the policy no longer allows.
    replace_policy(
        &gw,
        "multi",
        json!({"access": ["movies", "books"], "scopes": ["read"]}),
    )
    .await;
    let narrowed = call(&gw, "books", &access).await;
    assert_error(&narrowed, 403, "insufficient_scope");
    let seen_before = upstream.count();
    assert_eq!(call(&gw, "movies", &access).await.status, 200);
    assert_eq!(upstream.count(), seen_before + 1);

    // books removed from the policy's access: the same token is refused there at once.
    replace_policy(&gw, "multi", json!({"access": ["movies"]})).await;
    let refused = call(&gw, "books", &access).await;
    assert_error(&refused, 401, "invalid_token");
    assert!(
        refused
            .header("www-authenticate")
            .is_some_and(|h| h.contains("invalid_token")),
        "{:?}",
        refused.headers
    );
    assert_eq!(call(&gw, "movies", &access).await.status, 200);

    // Granted again (without narrowing): the token's own scope applies again.
    replace_policy(&gw, "multi", json!({"access": ["movies", "books"]})).await;
    assert_eq!(call(&gw, "books", &access).await.status, 200);
}

/// Bodies are checked by the rules of policies.yaml; each problem names its field, and nothing is
/// stored.
async fn invalid_policy_bodies_are_400_naming_the_field(storage: Storage) {
    let (gw, _upstream) = gateway(&storage).await;
    let cases = [
        (json!({"rate_limit": {"rate": 1, "per": "1s"}}), "id"),
        (json!({"id": ""}), "id"),
        (json!({"id": "has space"}), "id"),
        (
            json!({"id": "x", "rate_limit": {"rate": 1, "per": "0s"}}),
            "rate_limit.per",
        ),
        (
            json!({"id": "x", "rate_limit": {"rate": 1, "per": "soon"}}),
            "rate_limit.per",
        ),
        (
            json!({"id": "x", "rate_limit": {"rate": 0, "per": "1s"}}),
            "rate_limit.rate",
        ),
        (
            json!({"id": "x", "rate_limit": {"rate": -1, "per": "1s"}}),
            "rate_limit.rate",
        ),
        (json!({"id": "x", "rate_limit": {"rate": 1}}), "rate_limit"),
        (
            json!({"id": "x", "rate_limit": {"rate": 1, "per": "1s", "on_storage_error": "retry"}}),
            "rate_limit.on_storage_error",
        ),
        (
            json!({"id": "x", "quota": {"max": 0, "period": "1d"}}),
            "quota.max",
        ),
        (
            json!({"id": "x", "quota": {"max": 5, "period": "1y"}}),
            "quota.period",
        ),
        (json!({"id": "x", "scopes": ["read", "a b"]}), "scopes[1]"),
        (json!({"id": "x", "scopes": "read"}), "scopes"),
        (json!({"id": "x", "access": ["movies", "x"]}), "access[1]"),
        (json!({"id": "x", "burst": 5}), "burst"),
        (
            json!({"id": "x", "quota": {"max": 5, "period": "1d", "per": "1s"}}),
            "quota.per",
        ),
    ];
    for (body, field) in &cases {
        let response = gw.admin_send("POST", "/policies", Some(body)).await;
        assert_invalid(&response, field);
    }
    // The unknown field and the unknown API are named in the description.
    let unknown = gw
        .admin_send("POST", "/policies", Some(&json!({"id": "x", "burst": 5})))
        .await;
    assert!(
        unknown.text().contains("unknown field `burst`"),
        "{}",
        unknown.text()
    );
    let no_api = gw
        .admin_send(
            "POST",
            "/policies",
            Some(&json!({"id": "x", "access": ["nope"]})),
        )
        .await;
    assert!(
        no_api.text().contains("no API with id `nope`"),
        "{}",
        no_api.text()
    );
    // Every problem at once.
    let both = gw
        .admin_send(
            "POST",
            "/policies",
            Some(&json!({"id": "x", "rate_limit": {"rate": 0, "per": "0s"}, "access": ["nope"]})),
        )
        .await;
    let description = text(&both.json()["error_description"]).to_owned();
    for field in ["rate_limit.rate: ", "rate_limit.per: ", "access[0]: "] {
        assert!(description.contains(field), "{description}");
    }
    // Not JSON at all.
    let garbage = send(
        Request::post(gw.admin_url("/policies"))
            .header("authorization", format!("Bearer {ADMIN_SECRET}"))
            .body(Full::new(Bytes::from("id: gold")))
            .unwrap(),
    )
    .await;
    assert_error(&garbage, 400, "invalid_request");

    // PUT is validated the same way, and may not rename.
    create_policy(&gw, json!({"id": "gold"})).await;
    let put = |body: Value| {
        let gw = &gw;
        async move { gw.admin_send("PUT", "/policies/gold", Some(&body)).await }
    };
    assert_invalid(&put(json!({"id": "silver"})).await, "id");
    assert_invalid(
        &put(json!({"rate_limit": {"rate": 1, "per": "0ms"}})).await,
        "rate_limit.per",
    );
    assert_invalid(&put(json!({"access": ["nope"]})).await, "access[0]");

    let listed = gw.admin_get("/policies").await.json();
    assert_eq!(
        ids(&listed),
        ["bronze", "gold"],
        "nothing invalid was stored: {listed}"
    );
    assert_eq!(
        gw.admin_get("/policies/gold").await.json()["rate_limit"],
        Value::Null
    );
}

/// policies.yaml policies are listed and readable, marked read-only, and refused for PUT and
/// DELETE; stored ones are listed after them.
async fn file_policies_are_listed_read_only_and_cannot_be_changed(storage: Storage) {
    let (gw, _upstream) = gateway(&storage).await;
    let listed = gw.admin_get("/policies").await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert_eq!(listed.header("cache-control"), Some("no-store"));
    assert_eq!(
        listed.json(),
        json!({"policies": [{
            "id": "bronze",
            "rate_limit": null,
            "quota": {"max": 1000, "period": "1d"},
            "scopes": null,
            "access": ["movies"],
            "read_only": true,
            "source": "file",
        }]})
    );
    let bronze = gw.admin_get("/policies/bronze").await;
    assert_eq!(bronze.status, 200);
    assert_eq!(bronze.json()["source"], "file");

    let put = gw
        .admin_send(
            "PUT",
            "/policies/bronze",
            Some(&json!({"quota": {"max": 1, "period": "1d"}})),
        )
        .await;
    assert_error(&put, 409, "read_only");
    assert!(put.text().contains("policies.yaml"), "{}", put.text());
    let delete = gw.admin_send("DELETE", "/policies/bronze", None).await;
    assert_error(&delete, 409, "read_only");
    let forced = gw
        .admin_send("DELETE", "/policies/bronze?force=true", None)
        .await;
    assert_error(&forced, 409, "read_only");
    assert_eq!(gw.admin_get("/policies/bronze").await.json(), bronze.json());

    let created = gw
        .admin_send(
            "POST",
            "/policies",
            Some(&json!({"id": "gold", "rate_limit": {"rate": 1500, "per": "1500ms", "on_storage_error": "deny"}, "scopes": []})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.header("location"), Some("/policies/gold"));
    let gold = gw.admin_get("/policies/gold").await.json();
    assert_eq!(gold, created.json());
    assert_eq!(
        gold["rate_limit"],
        json!({"rate": 1500, "per": "1500ms", "on_storage_error": "deny"})
    );
    assert_eq!(gold["scopes"], json!([]));
    assert_eq!(gold["read_only"], false);
    assert_eq!(gold["source"], "store");
    assert!(
        gold["created_at"]
            .as_u64()
            .is_some_and(|t| t > 1_700_000_000)
    );
    assert_eq!(gold["updated_at"], gold["created_at"]);
    let listed = gw.admin_get("/policies").await.json();
    assert_eq!(ids(&listed), ["bronze", "gold"]);
    assert_eq!(listed["policies"][1], gold);
}

/// Ids are unique across both sources; unknown ids are 404 for every method.
async fn ids_are_unique_across_both_sources_and_unknown_ids_are_404(storage: Storage) {
    let (gw, _upstream) = gateway(&storage).await;
    let taken_by_file = gw
        .admin_send("POST", "/policies", Some(&json!({"id": "bronze"})))
        .await;
    assert_error(&taken_by_file, 409, "conflict");
    assert!(
        taken_by_file.text().contains("policies.yaml"),
        "{}",
        taken_by_file.text()
    );

    create_policy(
        &gw,
        json!({"id": "gold", "quota": {"max": 10, "period": "1d"}}),
    )
    .await;
    let again = gw
        .admin_send("POST", "/policies", Some(&json!({"id": "gold"})))
        .await;
    assert_error(&again, 409, "conflict");
    assert_eq!(
        gw.admin_get("/policies/gold").await.json()["quota"]["max"],
        10,
        "the first one stays"
    );

    assert_error(&gw.admin_get("/policies/silver").await, 404, "not_found");
    let put = gw
        .admin_send("PUT", "/policies/silver", Some(&json!({"access": []})))
        .await;
    assert_error(&put, 404, "not_found");
    assert_error(
        &gw.admin_send("DELETE", "/policies/silver", None).await,
        404,
        "not_found",
    );

    // A policy nobody uses is deleted with 204, and its id is free again.
    let deleted = gw.admin_send("DELETE", "/policies/gold", None).await;
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    assert!(deleted.body.is_empty());
    assert_error(&gw.admin_get("/policies/gold").await, 404, "not_found");
    create_policy(&gw, json!({"id": "gold"})).await;

    // Clients may name stored policies, and only existing ones.
    create_client(&gw, Some("gold")).await;
    let dangling = gw
        .admin_send(
            "POST",
            "/apis/movies/clients",
            Some(&json!({"grant_types": ["client_credentials"], "scopes": ["read"], "policy": "silver"})),
        )
        .await;
    assert_invalid(&dangling, "policy");

    // Other query parameters of DELETE are refused, naming them.
    assert_invalid(
        &gw.admin_send("DELETE", "/policies/gold?force=yes", None)
            .await,
        "force",
    );
    assert_invalid(
        &gw.admin_send("DELETE", "/policies/gold?cascade=true", None)
            .await,
        "cascade",
    );
    let wrong_method = gw.admin_send("PATCH", "/policies/gold", None).await;
    assert_error(&wrong_method, 405, "method_not_allowed");
    assert_eq!(wrong_method.header("allow"), Some("GET, PUT, DELETE"));
}

/// A policy that clients use is not deleted by accident: 409 lists them. With `?force=true` it is
/// deleted, the clients' `policy` is cleared, and their existing sessions are on the API's own
/// limits from the next request.
async fn deleting_a_policy_in_use_needs_force_and_leaves_its_clients_on_api_defaults(
    storage: Storage,
) {
    let (gw, _upstream) = gateway(&storage).await;
    create_policy(
        &gw,
        json!({"id": "vip", "rate_limit": {"rate": 100, "per": "1m"}, "access": ["movies", "books"]}),
    )
    .await;
    let first = create_client(&gw, Some("vip")).await;
    let second = create_client(&gw, Some("vip")).await;
    let bystander = create_client(&gw, None).await;
    let access = token(&gw, &first).await;
    let sid = sid_claim(&access);
    let before = call(&gw, "movies", &access).await;
    assert_eq!(before.header("x-ratelimit-limit"), Some("100"));
    assert_eq!(call(&gw, "books", &access).await.status, 200);

    let refused = gw.admin_send("DELETE", "/policies/vip", None).await;
    assert_error(&refused, 409, "policy_in_use");
    let mut listed: Vec<Value> = refused.json()["clients"].as_array().unwrap().clone();
    listed.sort_by_key(|c| c["client_id"].to_string());
    let mut expected = vec![
        json!({"api": "movies", "client_id": first.0, "read_only": false}),
        json!({"api": "movies", "client_id": second.0, "read_only": false}),
    ];
    expected.sort_by_key(|c| c["client_id"].to_string());
    assert_eq!(listed, expected);
    let description = text(&refused.json()["error_description"]).to_owned();
    assert!(
        description.contains(&format!("movies/{}", first.0)),
        "{description}"
    );
    assert!(description.contains("force=true"), "{description}");
    // Nothing changed.
    assert_eq!(gw.admin_get("/policies/vip").await.status, 200);
    assert_eq!(
        call(&gw, "movies", &access)
            .await
            .header("x-ratelimit-limit"),
        Some("100")
    );

    let forced = gw
        .admin_send("DELETE", "/policies/vip?force=true", None)
        .await;
    assert_eq!(forced.status, 200, "{}", forced.text());
    let body = forced.json();
    assert_eq!(body["deleted"], "vip");
    let mut left: Vec<Value> = body["clients_left_on_api_defaults"]
        .as_array()
        .unwrap()
        .clone();
    left.sort_by_key(|c| c["client_id"].to_string());
    assert_eq!(left, expected);
    assert_error(&gw.admin_get("/policies/vip").await, 404, "not_found");

    // The existing session is on the API's own rate limit now, and lost the policy's access.
    let after = call(&gw, "movies", &access).await;
    assert_eq!(after.status, 200, "{}", after.text());
    assert_eq!(
        after.header("x-ratelimit-limit"),
        Some(MOVIES_RATE.to_string().as_str())
    );
    assert_error(&call(&gw, "books", &access).await, 401, "invalid_token");
    let view = session(&gw, &sid).await;
    assert_eq!(view["policy"], Value::Null, "{view}");
    assert_eq!(view["rate_limit"]["rate"], MOVIES_RATE, "{view}");
    assert_eq!(view["rate_limit"]["source"], "api", "{view}");
    // The clients say so, and the one that did not use the policy is untouched.
    for client in [&first, &second] {
        let read = gw
            .admin_get(&format!("/apis/movies/clients/{}", client.0))
            .await
            .json();
        assert_eq!(read["policy"], Value::Null, "{read}");
    }
    let other = token(&gw, &bystander).await;
    assert_eq!(call(&gw, "movies", &other).await.status, 200);
    // New tokens work, on the API's defaults.
    let fresh = token(&gw, &second).await;
    assert_eq!(
        call(&gw, "movies", &fresh)
            .await
            .header("x-ratelimit-limit"),
        Some(MOVIES_RATE.to_string().as_str())
    );

    // Forcing the delete of an unused policy answers the same way, with nobody left behind.
    create_policy(&gw, json!({"id": "unused"})).await;
    let forced = gw
        .admin_send("DELETE", "/policies/unused?force=true", None)
        .await;
    assert_eq!(forced.status, 200, "{}", forced.text());
    assert_eq!(
        forced.json(),
        json!({"deleted": "unused", "clients_left_on_api_defaults": []})
    );
}

macro_rules! on_both_stores {
    ($($scenario:ident),* $(,)?) => {
        mod memory_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Storage::memory()).await;
                }
            )*
        }
        mod redis_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Storage::redis()).await;
                }
            )*
        }
    };
}

on_both_stores!(
    raising_a_policy_rate_limit_lets_the_next_request_through,
    session_lookup_shows_the_stored_policy_and_the_counts_the_proxy_used,
    changing_a_policy_access_or_scopes_applies_to_existing_tokens,
    invalid_policy_bodies_are_400_naming_the_field,
    file_policies_are_listed_read_only_and_cannot_be_changed,
    ids_are_unique_across_both_sources_and_unknown_ids_are_404,
    deleting_a_policy_in_use_needs_force_and_leaves_its_clients_on_api_defaults,
);

// --- Redis only: several nodes

/// Two gateway nodes on one Redis and key prefix: a session limited on one is limited on the other;
/// the limit raised through node A applies on node B within moments (pub/sub), without a restart.
/// Stored policies live in Redis under the key prefix, without a TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_sees_a_raised_limit_at_once() {
    let storage = Storage::redis();
    let upstream = Upstream::start().await;
    let a = node(&storage, &upstream).await;
    let b = node(&storage, &upstream).await;
    create_policy(
        &a,
        json!({"id": "gold", "rate_limit": {"rate": 2, "per": "1m"}}),
    )
    .await;
    let client = create_client(&a, Some("gold")).await;
    let access = token(&a, &client).await;

    // B reads the policy and the client from Redis; the two nodes count one budget.
    assert_eq!(
        b.admin_get("/policies/gold").await.json()["rate_limit"]["rate"],
        2
    );
    assert_eq!(call(&b, "movies", &access).await.status, 200);
    assert_eq!(call(&a, "movies", &access).await.status, 200);
    assert_error(&call(&b, "movies", &access).await, 429, "rate_limited");
    assert_error(&call(&a, "movies", &access).await, 429, "rate_limited");

    replace_policy(&a, "gold", json!({"rate_limit": {"rate": 10, "per": "1m"}})).await;
    assert_eq!(
        call(&a, "movies", &access).await.status,
        200,
        "node A at once"
    );
    let started = std::time::Instant::now();
    let mut on_b = call(&b, "movies", &access).await;
    while on_b.status != 200 && started.elapsed() < PROPAGATION {
        tokio::time::sleep(Duration::from_millis(10)).await;
        on_b = call(&b, "movies", &access).await;
    }
    assert_eq!(
        on_b.status,
        200,
        "node B never saw the raised limit: {}",
        on_b.text()
    );
    assert_eq!(on_b.header("x-ratelimit-limit"), Some("10"));

    // Deleted on B (forced: the client uses it): A puts the session on the API's defaults.
    let forced = b
        .admin_send("DELETE", "/policies/gold?force=true", None)
        .await;
    assert_eq!(forced.status, 200, "{}", forced.text());
    let started = std::time::Instant::now();
    let mut on_a = call(&a, "movies", &access).await;
    while on_a.header("x-ratelimit-limit") != Some("5") && started.elapsed() < PROPAGATION {
        tokio::time::sleep(Duration::from_millis(10)).await;
        on_a = call(&a, "movies", &access).await;
    }
    assert_eq!(on_a.status, 200, "{}", on_a.text());
    assert_eq!(on_a.header("x-ratelimit-limit"), Some("5"));

    let (server, prefix) = storage.redis.as_ref().unwrap();
    create_policy(&a, json!({"id": "silver"})).await;
    let keys = server.keys_and_ttls(prefix).await;
    assert!(
        keys.contains(&(format!("{prefix}policies"), -1)),
        "the policies hash, without a TTL: {keys:?}"
    );
    assert_eq!(server.keys_without_ttl(prefix).await, Vec::<String>::new());
}

/// A client whose policy vanished without its reference being cleared (deleted by another node
/// while the client was being created, or by hand) is on the API's defaults: no error, no 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_naming_a_missing_policy_is_on_api_defaults() {
    let storage = Storage::redis();
    let (gw, _upstream) = gateway(&storage).await;
    create_policy(
        &gw,
        json!({"id": "gold", "rate_limit": {"rate": 100, "per": "1m"}, "access": ["movies", "books"]}),
    )
    .await;
    let client = create_client(&gw, Some("gold")).await;
    let access = token(&gw, &client).await;
    assert_eq!(
        call(&gw, "movies", &access)
            .await
            .header("x-ratelimit-limit"),
        Some("100")
    );

    // Removed behind the admin API's back, with the invalidation another node would publish.
    let (server, prefix) = storage.redis.as_ref().unwrap();
    let mut conn = server.connection().await;
    let removed: i64 = ::redis::cmd("HDEL")
        .arg(format!("{prefix}policies"))
        .arg("gold")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(removed, 1);
    let _: i64 = ::redis::cmd("PUBLISH")
        .arg(format!("{prefix}revocations"))
        .arg(json!({"kind": "policy", "id": "gold"}).to_string())
        .query_async(&mut conn)
        .await
        .unwrap();

    let limit = MOVIES_RATE.to_string();
    assert!(
        eventually(Duration::from_secs(2), || async {
            call(&gw, "movies", &access)
                .await
                .header("x-ratelimit-limit")
                == Some(limit.as_str())
        })
        .await,
        "the session never fell back to the API's rate limit"
    );
    assert_error(&call(&gw, "books", &access).await, 401, "invalid_token");
    // The client still names the policy; new tokens are issued, on the defaults too.
    let read = gw
        .admin_get(&format!("/apis/movies/clients/{}", client.0))
        .await
        .json();
    assert_eq!(read["policy"], "gold");
    let fresh = token(&gw, &client).await;
    assert_eq!(call(&gw, "movies", &fresh).await.status, 200);
    assert_eq!(
        session(&gw, &sid_claim(&fresh)).await["policy"],
        Value::Null
    );
}
