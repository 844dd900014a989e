//! Client management through the admin API (docs/design.md §6): create, list, read, replace,
//! delete, rotate the secret, list and revoke sessions, and what each does to tokens at the OAuth
//! endpoints and the proxy.

mod common;

use bytes::Bytes;
use common::oauth::*;
use common::*;
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};

const STATIC_SECRET: &str = "static-secret-0123456789";
const ALICE_PASSWORD: &str = "alice-password";

/// `movies`: an OAuth API with every grant, scopes read/write and one static client; `books`: an
/// OAuth API with client_credentials only; `open`: no oauth block. Policies: gold. User: alice.
async fn gateway() -> (TestGateway, Upstream) {
    let upstream = Upstream::start().await;
    let config = ConfigDir::new("users: users.yaml\npolicies: policies.yaml\n");
    let [static_hash, alice] = hashes([STATIC_SECRET, ALICE_PASSWORD]);
    config.write(
        "users.yaml",
        &format!("- username: alice\n  password_hash: \"{alice}\"\n  scopes: [read, write]\n"),
    );
    config.write("policies.yaml", "- id: gold\n  scopes: [read, write]\n");
    config.api(
        "movies",
        &format!(
            r#"listen_path: /movies/
upstream: {{ url: "{}" }}
auth: {{ type: oauth2 }}
oauth:
  grant_types: [authorization_code, client_credentials, password, refresh_token]
  scopes: [read, write]
  clients:
    - client_id: yaml_app
      secret_hash: "{static_hash}"
      grant_types: [client_credentials]
      scopes: [read]
      claims: {{ tier: gold }}
"#,
            upstream.url()
        ),
    );
    config.api(
        "books",
        &format!(
            "listen_path: /books/\nupstream: {{ url: \"{}\" }}\noauth:\n  grant_types: [client_credentials]\n  scopes: [read]\n",
            upstream.url()
        ),
    );
    config.api("open", &open_api("/open/", &upstream.url()));
    (TestGateway::start(config).await, upstream)
}

async fn client_credentials(gw: &TestGateway, id: &str, secret: &str) -> TestResponse {
    post_form(
        &gw.url("/movies/oauth/token"),
        Some(&basic(id, secret)),
        &[("grant_type", "client_credentials")],
    )
    .await
}

/// A client_credentials access token, asserting success.
async fn token(gw: &TestGateway, id: &str, secret: &str) -> String {
    let response = client_credentials(gw, id, secret).await;
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

async fn introspect(gw: &TestGateway, token: &str) -> Value {
    let response = post_form(
        &gw.url("/movies/oauth/introspect"),
        Some(&format!("Bearer {ADMIN_SECRET}")),
        &[("token", token)],
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

async fn create(gw: &TestGateway, body: Value) -> Value {
    let response = gw
        .admin_send("POST", "/apis/movies/clients", Some(&body))
        .await;
    assert_eq!(response.status, 201, "{}", response.text());
    response.json()
}

fn assert_error(response: &TestResponse, status: u16, error: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    assert_eq!(response.json()["error"], error, "{}", response.text());
}

/// A 400 whose description names `field` first.
fn assert_field_error(response: &TestResponse, field: &str, needle: &str) {
    assert_error(response, 400, "invalid_request");
    let description = response.json()["error_description"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        description.starts_with(&format!("{field}: ")),
        "expected `{field}: ...`, got `{description}`"
    );
    assert!(
        description.contains(needle),
        "expected `{needle}` in `{description}`"
    );
}

/// No secret or hash anywhere in an admin answer.
fn assert_no_secret(response: &TestResponse, secret: &str) {
    let text = response.text();
    assert!(!text.contains(secret), "{text}");
    assert!(!text.contains("client_secret"), "{text}");
    assert!(!text.contains("secret_hash"), "{text}");
    assert!(!text.contains("$argon2"), "{text}");
}

#[tokio::test]
async fn created_client_gets_tokens_and_its_secret_is_shown_once() {
    let (gw, _upstream) = gateway().await;
    let created = gw
        .admin_send(
            "POST",
            "/apis/movies/clients",
            Some(&json!({
                "grant_types": ["client_credentials"],
                "scopes": ["read"],
                "policy": "gold",
                "claims": {"team": "billing"}
            })),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.header("cache-control"), Some("no-store"));
    let body = created.json();
    let id = body["client_id"]
        .as_str()
        .expect("generated client_id")
        .to_owned();
    let secret = body["client_secret"]
        .as_str()
        .expect("client_secret")
        .to_owned();
    assert!(!id.is_empty() && id.bytes().all(|b| (0x21..=0x7e).contains(&b)));
    assert!(secret.len() >= 43, "a 256-bit secret: {secret}");
    assert_eq!(body["public"], false);
    assert_eq!(body["read_only"], false);
    assert_eq!(body["grant_types"], json!(["client_credentials"]));
    assert_eq!(body["policy"], "gold");
    assert_eq!(
        created.header("location"),
        Some(format!("/apis/movies/clients/{id}").as_str())
    );

    // Listed and readable, never with the secret.
    let list = gw.admin_get("/apis/movies/clients").await;
    assert_eq!(list.status, 200, "{}", list.text());
    assert_no_secret(&list, &secret);
    let clients = list.json()["clients"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let find = |cid: &str| clients.iter().find(|c| c["client_id"] == cid).cloned();
    let listed = find(&id).expect("created client listed");
    assert_eq!(listed["read_only"], false);
    assert_eq!(listed["claims"], json!({"team": "billing"}));
    let yaml = find("yaml_app").expect("static client listed");
    assert_eq!(yaml["read_only"], true);
    assert_eq!(yaml["public"], false);

    let one = gw.admin_get(&format!("/apis/movies/clients/{id}")).await;
    assert_eq!(one.status, 200, "{}", one.text());
    assert_no_secret(&one, &secret);
    assert_eq!(one.json()["scopes"], json!(["read"]));

    // The client works at the token endpoint and its token at the proxy.
    let response = client_credentials(&gw, &id, &secret).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["scope"], "read");
    let access = response.json()["access_token"].as_str().unwrap().to_owned();
    let active = introspect(&gw, &access).await;
    assert_eq!(active["active"], true, "{active}");
    assert_eq!(active["client_id"], id.as_str());
}

#[tokio::test]
async fn public_clients_get_no_secret() {
    let (gw, _upstream) = gateway().await;
    let body = create(
        &gw,
        json!({
            "client_id": "spa",
            "public": true,
            "redirect_uris": ["https://spa.example/cb", "http://127.0.0.1:3000/cb"],
            "grant_types": ["authorization_code", "refresh_token"],
            "scopes": ["read"]
        }),
    )
    .await;
    assert_eq!(body["client_id"], "spa");
    assert_eq!(body["public"], true);
    assert!(body.get("client_secret").is_none(), "{body}");
    let rotate = gw
        .admin_send("POST", "/apis/movies/clients/spa/rotate-secret", None)
        .await;
    assert_error(&rotate, 409, "conflict");
}

#[tokio::test]
async fn rotating_the_secret_stops_the_old_one_at_once() {
    let (gw, _upstream) = gateway().await;
    let body = create(
        &gw,
        json!({"grant_types": ["client_credentials"], "scopes": ["read"]}),
    )
    .await;
    let id = body["client_id"].as_str().unwrap().to_owned();
    let old = body["client_secret"].as_str().unwrap().to_owned();
    // Twice, so the old secret is in the token endpoint's verification cache.
    token(&gw, &id, &old).await;
    token(&gw, &id, &old).await;

    let rotated = gw
        .admin_send(
            "POST",
            &format!("/apis/movies/clients/{id}/rotate-secret"),
            None,
        )
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    assert_eq!(rotated.header("cache-control"), Some("no-store"));
    assert_eq!(rotated.json()["client_id"], id.as_str());
    let new = rotated.json()["client_secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);

    let refused = client_credentials(&gw, &id, &old).await;
    assert_error(&refused, 401, "invalid_client");
    token(&gw, &id, &new).await;
    // The new secret is shown only by the rotation.
    assert_no_secret(
        &gw.admin_get(&format!("/apis/movies/clients/{id}")).await,
        &new,
    );

    let unknown = gw
        .admin_send("POST", "/apis/movies/clients/nobody/rotate-secret", None)
        .await;
    assert_error(&unknown, 404, "not_found");
}

#[tokio::test]
async fn deleting_a_client_revokes_its_sessions_and_tokens() {
    let (gw, _upstream) = gateway().await;
    let body = create(
        &gw,
        json!({"grant_types": ["client_credentials"], "scopes": ["read"]}),
    )
    .await;
    let id = body["client_id"].as_str().unwrap().to_owned();
    let secret = body["client_secret"].as_str().unwrap().to_owned();
    let access = token(&gw, &id, &secret).await;
    assert_eq!(introspect(&gw, &access).await["active"], true);
    let bearer = format!("Bearer {access}");
    let before = get_with(&gw.url("/movies/films"), &[("authorization", &bearer)]).await;
    assert_eq!(before.status, 200, "the proxy accepts the client's token");

    let deleted = gw
        .admin_send("DELETE", &format!("/apis/movies/clients/{id}"), None)
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    assert!(deleted.body.is_empty());

    assert_eq!(introspect(&gw, &access).await, json!({"active": false}));
    let after = get_with(&gw.url("/movies/films"), &[("authorization", &bearer)]).await;
    assert_eq!(
        after.status, 401,
        "tokens of a deleted client stop working at the proxy"
    );
    assert!(
        gw.admin_get(&format!("/apis/movies/clients/{id}/sessions"))
            .await
            .json()["sessions"]
            == json!([])
    );
    assert_error(
        &client_credentials(&gw, &id, &secret).await,
        401,
        "invalid_client",
    );

    let gone = gw.admin_get(&format!("/apis/movies/clients/{id}")).await;
    assert_error(&gone, 404, "not_found");
    let again = gw
        .admin_send("DELETE", &format!("/apis/movies/clients/{id}"), None)
        .await;
    assert_error(&again, 404, "not_found");
}

#[tokio::test]
async fn validation_errors_name_the_field() {
    let (gw, _upstream) = gateway().await;
    let post = |body: Value| {
        let gw = &gw;
        async move {
            gw.admin_send("POST", "/apis/movies/clients", Some(&body))
                .await
        }
    };

    let r = post(
        json!({"redirect_uris": ["http://app.example/cb"], "grant_types": ["authorization_code"]}),
    )
    .await;
    assert_field_error(&r, "redirect_uris[0]", "loopback");
    let r = post(json!({"redirect_uris": ["https://app.example/cb#x"], "grant_types": ["authorization_code"]})).await;
    assert_field_error(&r, "redirect_uris[0]", "fragment");
    let r = post(json!({"redirect_uris": ["/cb"], "grant_types": ["authorization_code"]})).await;
    assert_field_error(&r, "redirect_uris[0]", "not an absolute URL");
    let r = post(json!({"grant_types": ["authorization_code"]})).await;
    assert_field_error(
        &r,
        "redirect_uris",
        "required for the authorization_code grant",
    );
    let r = post(json!({"grant_types": ["implicit"]})).await;
    assert_field_error(&r, "grant_types[0]", "unknown grant type `implicit`");
    let r = post(json!({"grant_types": []})).await;
    assert_field_error(&r, "grant_types", "at least one grant type");
    let r = post(json!({"grant_types": ["client_credentials"], "scopes": ["read", "admin"]})).await;
    assert_field_error(&r, "scopes[1]", "`admin` is not in oauth.scopes");
    let r = post(json!({"grant_types": ["client_credentials"], "policy": "platinum"})).await;
    assert_field_error(&r, "policy", "no policy with id `platinum`");
    let r = post(json!({"grant_types": ["client_credentials"], "public": true})).await;
    assert_field_error(&r, "grant_types[0]", "public client");
    let r = post(json!({"grant_types": ["client_credentials"], "claims": {"sub": "root"}})).await;
    assert_field_error(&r, "claims.sub", "set by the gateway");
    let r = post(json!({"client_id": "has space", "grant_types": ["client_credentials"]})).await;
    assert_field_error(&r, "client_id", "visible ASCII");
    let r =
        post(json!({"client_id": "x".repeat(129), "grant_types": ["client_credentials"]})).await;
    assert_field_error(&r, "client_id", "1–128");
    // Several problems are all reported, the first field first.
    let r = post(json!({"grant_types": ["implicit"], "scopes": ["admin"]})).await;
    assert_field_error(&r, "grant_types[0]", "scopes[0]: scope `admin`");

    // The body itself: unknown fields, wrong types, not JSON.
    let r =
        post(json!({"grant_types": ["client_credentials"], "secret_hash": "$argon2id$..."})).await;
    assert_field_error(&r, "secret_hash", "unknown field `secret_hash`");
    let r = post(json!({"grant_types": "client_credentials"})).await;
    assert_field_error(&r, "grant_types", "invalid type");
    let r = send(
        Request::post(gw.admin_url("/apis/movies/clients"))
            .header("authorization", format!("Bearer {ADMIN_SECRET}"))
            .body(Full::new(Bytes::from_static(b"grant_types=password")))
            .unwrap(),
    )
    .await;
    assert_field_error(&r, "body", "");

    // A grant the API does not enable.
    let r = gw
        .admin_send(
            "POST",
            "/apis/books/clients",
            Some(&json!({"grant_types": ["password"]})),
        )
        .await;
    assert_field_error(&r, "grant_types[0]", "not enabled for this API");

    // Nothing was created by any of these.
    let list = gw.admin_get("/apis/movies/clients").await;
    assert_eq!(list.json()["clients"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn client_ids_are_unique_per_api_and_may_hold_any_visible_character() {
    let (gw, _upstream) = gateway().await;
    let taken = gw
        .admin_send(
            "POST",
            "/apis/movies/clients",
            Some(&json!({"client_id": "yaml_app", "grant_types": ["client_credentials"]})),
        )
        .await;
    assert_error(&taken, 409, "conflict");

    let body = json!({"client_id": "team/a:b%", "grant_types": ["client_credentials"], "scopes": ["read"]});
    let created = create(&gw, body.clone()).await;
    assert_eq!(
        created.get("client_id").and_then(Value::as_str),
        Some("team/a:b%")
    );
    let again = gw
        .admin_send("POST", "/apis/movies/clients", Some(&body))
        .await;
    assert_error(&again, 409, "conflict");

    let one = gw.admin_get("/apis/movies/clients/team%2Fa%3Ab%25").await;
    assert_eq!(one.status, 200, "{}", one.text());
    assert_eq!(one.json()["client_id"], "team/a:b%");
    let secret = created["client_secret"].as_str().unwrap();
    token(&gw, "team/a:b%", secret).await;

    // The same id is free at another API.
    let books = gw
        .admin_send(
            "POST",
            "/apis/books/clients",
            Some(&json!({"client_id": "team/a:b%", "grant_types": ["client_credentials"]})),
        )
        .await;
    assert_eq!(books.status, 201, "{}", books.text());
}

#[tokio::test]
async fn put_replaces_a_dynamic_client_and_keeps_its_secret() {
    let (gw, _upstream) = gateway().await;
    let body = create(
        &gw,
        json!({"client_id": "svc", "grant_types": ["client_credentials"], "scopes": ["read"]}),
    )
    .await;
    let secret = body["client_secret"].as_str().unwrap().to_owned();
    let created_at = body["created_at"].clone();

    let put = gw
        .admin_send(
            "PUT",
            "/apis/movies/clients/svc",
            Some(&json!({"grant_types": ["client_credentials"], "scopes": ["read", "write"], "claims": {"tier": "silver"}})),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.text());
    assert_no_secret(&put, &secret);
    assert_eq!(put.json()["scopes"], json!(["read", "write"]));
    assert_eq!(put.json()["created_at"], created_at);

    let response = post_form(
        &gw.url("/movies/oauth/token"),
        Some(&basic("svc", &secret)),
        &[
            ("grant_type", "client_credentials"),
            ("scope", "read write"),
        ],
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["scope"], "read write");

    let invalid = gw
        .admin_send(
            "PUT",
            "/apis/movies/clients/svc",
            Some(&json!({"grant_types": ["client_credentials"], "scopes": ["delete"]})),
        )
        .await;
    assert_field_error(&invalid, "scopes[0]", "not in oauth.scopes");
    let renamed = gw
        .admin_send(
            "PUT",
            "/apis/movies/clients/svc",
            Some(&json!({"client_id": "other", "grant_types": ["client_credentials"]})),
        )
        .await;
    assert_field_error(&renamed, "client_id", "cannot be renamed");
    let kind = gw
        .admin_send(
            "PUT",
            "/apis/movies/clients/svc",
            Some(&json!({"public": true, "grant_types": ["password"]})),
        )
        .await;
    assert_field_error(&kind, "public", "cannot change");
    let unknown = gw
        .admin_send(
            "PUT",
            "/apis/movies/clients/nobody",
            Some(&json!({"grant_types": ["client_credentials"]})),
        )
        .await;
    assert_error(&unknown, 404, "not_found");

    // The failed PUTs changed nothing.
    let one = gw.admin_get("/apis/movies/clients/svc").await;
    assert_eq!(one.json()["scopes"], json!(["read", "write"]));
}

#[tokio::test]
async fn static_clients_are_read_only() {
    let (gw, _upstream) = gateway().await;
    let one = gw.admin_get("/apis/movies/clients/yaml_app").await;
    assert_eq!(one.status, 200, "{}", one.text());
    assert_eq!(one.json()["read_only"], true);
    assert_eq!(one.json()["claims"], json!({"tier": "gold"}));
    assert_no_secret(&one, STATIC_SECRET);

    let body = json!({"grant_types": ["client_credentials"], "scopes": ["read", "write"]});
    for (method, path, body) in [
        ("PUT", "/apis/movies/clients/yaml_app", Some(&body)),
        ("DELETE", "/apis/movies/clients/yaml_app", None),
        ("POST", "/apis/movies/clients/yaml_app/rotate-secret", None),
    ] {
        let response = gw.admin_send(method, path, body).await;
        assert_error(&response, 409, "read_only");
        let description = response.json()["error_description"].to_string();
        assert!(description.contains("read-only"), "{description}");
        assert!(description.contains("API definition file"), "{description}");
    }
    // Still there and still working with its secret.
    token(&gw, "yaml_app", STATIC_SECRET).await;
}

#[tokio::test]
async fn admin_client_endpoints_need_the_admin_secret() {
    let (gw, _upstream) = gateway().await;
    let body = Bytes::from(
        json!({"client_id": "sneaky", "grant_types": ["client_credentials"]}).to_string(),
    );
    for auth in [
        None,
        Some("Bearer wrong-secret"),
        Some("Basic dGVzdDp0ZXN0"),
    ] {
        for (method, path) in [
            ("GET", "/apis/movies/clients"),
            ("POST", "/apis/movies/clients"),
            ("GET", "/apis/movies/clients/yaml_app"),
            ("DELETE", "/apis/movies/clients/yaml_app/sessions"),
        ] {
            let mut req = Request::builder().method(method).uri(gw.admin_url(path));
            if let Some(auth) = auth {
                req = req.header("authorization", auth);
            }
            let response = send(req.body(Full::new(body.clone())).unwrap()).await;
            assert_eq!(response.status, 401, "{method} {path} with {auth:?}");
            assert_eq!(response.json()["error"], "unauthorized");
        }
    }
    let missing = gw.admin_get("/apis/movies/clients/sneaky").await;
    assert_error(&missing, 404, "not_found");
}

#[tokio::test]
async fn unknown_apis_and_apis_without_oauth_are_404() {
    let (gw, _upstream) = gateway().await;
    for path in [
        "/apis/nope/clients",
        "/apis/open/clients",
        "/apis/nope/clients/x",
        "/apis/open/clients/x/sessions",
    ] {
        assert_error(&gw.admin_get(path).await, 404, "not_found");
    }
    let post = gw
        .admin_send(
            "POST",
            "/apis/open/clients",
            Some(&json!({"grant_types": ["client_credentials"]})),
        )
        .await;
    assert_error(&post, 404, "not_found");
    let wrong_method = gw
        .admin_send("PATCH", "/apis/movies/clients/yaml_app", None)
        .await;
    assert_eq!(wrong_method.status, 405, "{}", wrong_method.text());
    let unknown_sub = gw.admin_get("/apis/movies/clients/yaml_app/other").await;
    assert_eq!(unknown_sub.status, 404, "{}", unknown_sub.text());
}

#[tokio::test]
async fn sessions_are_listed_and_revoked_in_bulk() {
    let (gw, _upstream) = gateway().await;
    let body = create(
        &gw,
        json!({"client_id": "mobile", "grant_types": ["password", "refresh_token", "client_credentials"], "scopes": ["read", "write"]}),
    )
    .await;
    let secret = body["client_secret"].as_str().unwrap().to_owned();

    let password = post_form(
        &gw.url("/movies/oauth/token"),
        Some(&basic("mobile", &secret)),
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", ALICE_PASSWORD),
            ("scope", "read"),
        ],
    )
    .await;
    assert_eq!(password.status, 200, "{}", password.text());
    let user_access = password.json()["access_token"].as_str().unwrap().to_owned();
    let refresh = password.json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let service_access = token(&gw, "mobile", &secret).await;
    // Another client's session is not touched.
    let other_access = token(&gw, "yaml_app", STATIC_SECRET).await;

    let listed = gw.admin_get("/apis/movies/clients/mobile/sessions").await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    let sessions = listed.json()["sessions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    // The client_credentials token is stateless (docs/design.md §9f): counted, not listed.
    assert_eq!(sessions.len(), 1, "{}", listed.text());
    let stateless = &listed.json()["stateless"];
    assert_eq!(stateless["issued"], 1, "{}", listed.text());
    assert!(stateless["last_issued_at"].is_u64(), "{}", listed.text());
    assert_eq!(stateless["not_before"], Value::Null, "{}", listed.text());
    let alice = sessions
        .iter()
        .find(|s| s["username"] == "alice")
        .expect("alice's session");
    assert_eq!(alice["scope"], "read");
    assert_eq!(alice["refresh_count"], 0);
    for field in ["sid", "created_at", "last_refresh_at", "expires_at"] {
        assert!(alice.get(field).is_some(), "{field} in {alice}");
    }
    assert!(alice["sid"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(!listed.text().contains(&refresh));

    let revoked = gw
        .admin_send("DELETE", "/apis/movies/clients/mobile/sessions", None)
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    assert_eq!(revoked.json()["revoked"], 1, "{}", revoked.text());
    let not_before = revoked.json()["not_before"].as_u64().expect("not_before");

    let listed = gw.admin_get("/apis/movies/clients/mobile/sessions").await;
    assert_eq!(listed.json()["sessions"], json!([]));
    assert_eq!(listed.json()["stateless"]["not_before"], not_before);
    assert_eq!(
        introspect(&gw, &user_access).await,
        json!({"active": false})
    );
    assert_eq!(
        introspect(&gw, &service_access).await,
        json!({"active": false})
    );
    assert_eq!(introspect(&gw, &other_access).await["active"], true);
    let refreshed = post_form(
        &gw.url("/movies/oauth/token"),
        Some(&basic("mobile", &secret)),
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_error(&refreshed, 400, "invalid_grant");

    // The client itself still works: a token issued right after the revocation (even within the
    // same second) is not caught by the cutoff.
    let fresh = token(&gw, "mobile", &secret).await;
    assert_eq!(introspect(&gw, &fresh).await["active"], true);
    // The static client's token is stateless: no session to revoke, but the cutoff catches it.
    let static_sessions = gw.admin_get("/apis/movies/clients/yaml_app/sessions").await;
    assert_eq!(static_sessions.json()["sessions"], json!([]));
    assert_eq!(static_sessions.json()["stateless"]["issued"], 1);
    let again = gw
        .admin_send("DELETE", "/apis/movies/clients/yaml_app/sessions", None)
        .await;
    assert_eq!(again.json()["revoked"], 0, "{}", again.text());
    assert_eq!(
        introspect(&gw, &other_access).await,
        json!({"active": false})
    );
}

/// Creates the dynamic client `mobile` (password + refresh, scopes read and write, plus `extra`
/// fields) and signs alice in with it: the client's secret and the session's refresh token.
async fn mobile_with_a_read_write_session(gw: &TestGateway, extra: Value) -> (String, String) {
    let mut body = json!({"client_id": "mobile", "grant_types": ["password", "refresh_token"], "scopes": ["read", "write"]});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let secret = create(gw, body).await["client_secret"]
        .as_str()
        .expect("client_secret")
        .to_owned();
    let refresh_token = read_write_session(gw, &secret).await;
    (secret, refresh_token)
}

/// A password-grant session of `mobile` (scopes read + write): its refresh token.
async fn read_write_session(gw: &TestGateway, secret: &str) -> String {
    let password = post_form(
        &gw.url("/movies/oauth/token"),
        Some(&basic("mobile", secret)),
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", ALICE_PASSWORD),
        ],
    )
    .await;
    assert_eq!(password.status, 200, "{}", password.text());
    assert_eq!(password.json()["scope"], "read write");
    password.json()["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_owned()
}

async fn refresh(gw: &TestGateway, secret: &str, refresh_token: &str) -> TestResponse {
    post_form(
        &gw.url("/movies/oauth/token"),
        Some(&basic("mobile", secret)),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

#[tokio::test]
async fn a_client_narrowed_by_the_admin_api_refreshes_only_what_it_may_still_have() {
    let (gw, _upstream) = gateway().await;
    let (secret, refresh_token) = mobile_with_a_read_write_session(&gw, json!({})).await;

    // The operator takes `write` away from the client.
    let narrowed = gw
        .admin_send(
            "PUT",
            "/apis/movies/clients/mobile",
            Some(&json!({"grant_types": ["password", "refresh_token"], "scopes": ["read"]})),
        )
        .await;
    assert_eq!(narrowed.status, 200, "{}", narrowed.text());

    let refreshed = refresh(&gw, &secret, &refresh_token).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text());
    assert_eq!(refreshed.json()["scope"], "read");
    let access = refreshed.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(introspect(&gw, &access).await["scope"], "read");

    // Asking for the scope it lost is refused, not silently granted.
    let next = refreshed.json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let wider = post_form(
        &gw.url("/movies/oauth/token"),
        Some(&basic("mobile", &secret)),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &next),
            ("scope", "read write"),
        ],
    )
    .await;
    assert_error(&wider, 400, "invalid_scope");
}

#[tokio::test]
async fn a_client_moved_to_a_narrower_policy_refreshes_within_it() {
    let (gw, _upstream) = gateway().await;
    let (secret, refresh_token) =
        mobile_with_a_read_write_session(&gw, json!({"policy": "gold"})).await;

    let policy = gw
        .admin_send(
            "POST",
            "/policies",
            Some(&json!({"id": "bronze", "scopes": ["read"]})),
        )
        .await;
    assert_eq!(policy.status, 201, "{}", policy.text());
    let moved = gw
        .admin_send(
            "PUT",
            "/apis/movies/clients/mobile",
            Some(&json!({"grant_types": ["password", "refresh_token"], "scopes": ["read", "write"], "policy": "bronze"})),
        )
        .await;
    assert_eq!(moved.status, 200, "{}", moved.text());

    let refreshed = refresh(&gw, &secret, &refresh_token).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text());
    assert_eq!(refreshed.json()["scope"], "read");
}

#[tokio::test]
async fn a_deleted_client_cannot_refresh() {
    let (gw, _upstream) = gateway().await;
    let (secret, refresh_token) = mobile_with_a_read_write_session(&gw, json!({})).await;
    let deleted = gw
        .admin_send("DELETE", "/apis/movies/clients/mobile", None)
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    // The client no longer authenticates: RFC 6749 §5.2 answers that as invalid_client (401).
    assert_error(
        &refresh(&gw, &secret, &refresh_token).await,
        401,
        "invalid_client",
    );
}
