//! Protecting an API at the gateway (docs/design.md §5,
//! docs/security.md#contract-token-validation-at-the-gateway): token validation with tokens forged
//! from the gateway's own signing key, credential sources and stripping, forward_claims,
//! revocation, rate limits, quotas, policies and rejection metrics — over real sockets, with a real
//! upstream that records what reached it.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::oauth::*;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tollgate::clock::{Clock, ManualClock};
use tollgate::config::SigningAlgorithm;
use tollgate::token::keys::{SigningKey, generate_pkcs8_pem, write_private_key};

const SECRET: &str = "client-secret-0123456789";
const ALICE_PASSWORD: &str = "alice-password";
/// `public_url` of the harness's gateway.yaml: the base of every issuer.
const PUBLIC_URL: &str = "http://127.0.0.1:8080";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// ---------------------------------------------------------------------------------------------
// Configuration

/// One API definition: `/<id>/` with an authorization server whose confidential clients all use
/// `SECRET`: `service` (client_credentials, read write), `reader` (client_credentials, read) and
/// `app` (password + refresh_token, read write), plus any added with [`ApiYaml::client`].
struct ApiYaml {
    id: &'static str,
    auth: String,
    clients: Vec<String>,
    top: String,
}

impl ApiYaml {
    fn new(id: &'static str) -> ApiYaml {
        ApiYaml {
            id,
            auth: String::new(),
            clients: Vec::new(),
            top: String::new(),
        }
    }

    /// More members of the `auth` flow mapping, e.g. `required_scopes: [write]`.
    fn auth(mut self, members: &str) -> ApiYaml {
        self.auth = members.to_string();
        self
    }

    /// A client_credentials client with `SECRET`, scopes read and write, and this policy.
    fn client_with_policy(mut self, client_id: &str, policy: &str) -> ApiYaml {
        self.clients.push(format!(
            "{{ client_id: {client_id}, secret_hash: \"{}\", grant_types: [client_credentials], scopes: [read, write], policy: {policy} }}",
            hashed(SECRET)
        ));
        self
    }

    /// A top-level YAML line, e.g. `rate_limit: { rate: 2, per: 1s }`.
    fn top(mut self, line: &str) -> ApiYaml {
        self.top.push_str(line);
        self.top.push('\n');
        self
    }

    fn build(&self, upstream: &str) -> String {
        let secret = hashed(SECRET);
        let auth = if self.auth.is_empty() {
            "{ type: oauth2 }".to_string()
        } else {
            format!("{{ type: oauth2, {} }}", self.auth)
        };
        let mut clients = vec![
            format!(
                "{{ client_id: service, secret_hash: \"{secret}\", grant_types: [client_credentials], scopes: [read, write] }}"
            ),
            format!(
                "{{ client_id: reader, secret_hash: \"{secret}\", grant_types: [client_credentials], scopes: [read] }}"
            ),
            format!(
                "{{ client_id: app, secret_hash: \"{secret}\", grant_types: [password, refresh_token], scopes: [read, write] }}"
            ),
        ];
        clients.extend(self.clients.iter().cloned());
        let clients: String = clients.iter().map(|c| format!("    - {c}\n")).collect();
        format!(
            "listen_path: /{id}/\n\
             upstream: {{ url: \"{upstream}\" }}\n\
             auth: {auth}\n\
             oauth:\n  grant_types: [client_credentials, password, refresh_token]\n  scopes: [read, write]\n  clients:\n{clients}{top}",
            id = self.id,
            top = self.top,
        )
    }
}

/// The gateway under test, the upstream behind it, and the means to forge tokens with its key.
struct Harness {
    gw: TestGateway,
    upstream: Upstream,
    forge: Forge,
    /// The rate limiter's clock: it stands still until a test advances it past a period.
    clock: ManualClock,
}

/// Starts a gateway serving `apis` in front of one recording upstream. Its signing key is generated
/// here, before start, so the test can sign tokens with it; users.yaml has alice (read write, email
/// claim); `policies` becomes policies.yaml.
async fn start(apis: &[ApiYaml], policies: Option<&str>) -> Harness {
    let upstream = Upstream::start().await;
    let mut extra = String::from("users: users.yaml\n");
    if policies.is_some() {
        extra.push_str("policies: policies.yaml\n");
    }
    let config = ConfigDir::new(&extra);
    let forge = Forge::install(config.path());
    config.write(
        "users.yaml",
        &format!(
            "- username: alice\n  password_hash: \"{}\"\n  scopes: [read, write]\n  claims: {{ email: alice@example.com }}\n",
            hashed(ALICE_PASSWORD)
        ),
    );
    if let Some(policies) = policies {
        config.write("policies.yaml", policies);
    }
    for api in apis {
        config.api(api.id, &api.build(&upstream.url()));
    }
    let (limiter_clock, clock) = Clock::manual();
    let options = tollgate::RunOptions {
        clock: limiter_clock,
    };
    Harness {
        gw: TestGateway::start_with(config, options).await,
        upstream,
        forge,
        clock,
    }
}

// ---------------------------------------------------------------------------------------------
// Forged tokens

/// Signs tokens with the gateway's own private key, so each claim rule can be broken on its own.
struct Forge {
    pem: String,
    kid: String,
}

impl Forge {
    /// Generates an ES256 key at `keys/signing.pem` (the harness's `signing.key_file`), where the
    /// gateway will load it instead of generating its own.
    fn install(config_dir: &Path) -> Forge {
        let pem = generate_pkcs8_pem(SigningAlgorithm::Es256).expect("generate key");
        let path = config_dir.join("keys/signing.pem");
        write_private_key(&path, &pem).expect("write key");
        let kid = SigningKey::from_file(&path).expect("load key").kid;
        Forge { pem, kid }
    }

    fn encoding_key(&self) -> EncodingKey {
        EncodingKey::from_ec_pem(self.pem.as_bytes()).expect("EC key")
    }

    /// A claim set the gateway accepts at `api`: what it issues itself (docs/design.md §4).
    fn claims(&self, api: &str) -> Value {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let now = now();
        json!({
            "iss": format!("{PUBLIC_URL}/{api}"),
            "aud": api,
            "sub": "alice",
            "client_id": "app",
            "scope": "read write",
            "exp": now + 600,
            "iat": now,
            "nbf": now,
            "jti": format!("forged-jti-{n}"),
            "sid": format!("forged-sid-{n}"),
        })
    }

    /// The header the gateway puts on its own tokens: ES256, `typ: at+jwt`, our `kid`.
    fn header(&self) -> Value {
        json!({ "alg": "ES256", "typ": "at+jwt", "kid": self.kid })
    }

    /// Signs with `jsonwebtoken::encode`, as the gateway does.
    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("at+jwt".into());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding_key()).expect("sign")
    }

    /// Signs a hand-made header (anything the library's `Header` would not write) with our key.
    fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        sign_raw(header, claims, &self.encoding_key(), Algorithm::ES256)
    }
}

fn b64_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

/// `header.claims.signature` with the signature made by `key` under `alg`, whatever the header
/// says.
fn sign_raw(header: &Value, claims: &Value, key: &EncodingKey, alg: Algorithm) -> String {
    let input = format!("{}.{}", b64_json(header), b64_json(claims));
    let signature = jsonwebtoken::crypto::sign(input.as_bytes(), key, alg).expect("sign");
    format!("{input}.{signature}")
}

/// A JWS without a signature (`alg: none`).
fn unsigned(header: &Value, claims: &Value) -> String {
    format!("{}.{}.", b64_json(header), b64_json(claims))
}

/// Another ES256 key, not in the gateway's key table (an attacker's).
fn foreign_key() -> (EncodingKey, SigningKey) {
    let pem = generate_pkcs8_pem(SigningAlgorithm::Es256).expect("generate key");
    let key = SigningKey::from_pkcs8_pem(pem.as_bytes(), Path::new("attacker.pem")).expect("load");
    (
        EncodingKey::from_ec_pem(pem.as_bytes()).expect("EC key"),
        key,
    )
}

/// The public half of our key in the forms an attacker would find (the JWKS): the SPKI PEM, the
/// JWK JSON and the raw EC point — each a candidate HMAC secret for the HS256 confusion attack.
fn public_key_forms(jwk: &Value) -> Vec<(&'static str, Vec<u8>)> {
    let coordinate = |name: &str| URL_SAFE_NO_PAD.decode(jwk[name].as_str().unwrap()).unwrap();
    let mut point = vec![0x04];
    point.extend(coordinate("x"));
    point.extend(coordinate("y"));
    // SubjectPublicKeyInfo for id-ecPublicKey / prime256v1, then the uncompressed point.
    let mut spki = vec![
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    spki.extend(&point);
    let body = STANDARD.encode(&spki);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    );
    vec![
        ("public key PEM", pem.into_bytes()),
        ("public JWK", jwk.to_string().into_bytes()),
        ("raw public point", point),
    ]
}

fn set(mut claims: Value, name: &str, value: Value) -> Value {
    claims[name] = value;
    claims
}

fn without(mut claims: Value, name: &str) -> Value {
    claims.as_object_mut().unwrap().remove(name);
    claims
}

// ---------------------------------------------------------------------------------------------
// HTTP helpers

/// An access token from `{lp}oauth/token` by client_credentials.
async fn client_token(gw: &TestGateway, api: &str, client_id: &str, scope: &str) -> String {
    let response = post_form(
        &gw.url(&format!("/{api}/oauth/token")),
        Some(&basic(client_id, SECRET)),
        &[("grant_type", "client_credentials"), ("scope", scope)],
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()["access_token"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `{access_token, refresh_token, ...}` for alice through the `app` client (password grant).
async fn password_grant(gw: &TestGateway, api: &str) -> Value {
    let response = post_form(
        &gw.url(&format!("/{api}/oauth/token")),
        Some(&basic("app", SECRET)),
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", ALICE_PASSWORD),
        ],
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

async fn refresh(gw: &TestGateway, api: &str, refresh_token: &str) -> Value {
    let response = post_form(
        &gw.url(&format!("/{api}/oauth/token")),
        Some(&basic("app", SECRET)),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

async fn revoke(gw: &TestGateway, api: &str, token: &str) {
    let response = post_form(
        &gw.url(&format!("/{api}/oauth/revoke")),
        Some(&basic("app", SECRET)),
        &[("token", token)],
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
}

/// `GET <path>` with `Authorization: Bearer <token>`.
async fn call(gw: &TestGateway, path: &str, token: &str) -> TestResponse {
    get_with(
        &gw.url(path),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
}

fn text(token: &Value) -> &str {
    token.as_str().expect("token string")
}

// ---------------------------------------------------------------------------------------------
// Assertions

#[track_caller]
fn assert_passes(response: &TestResponse, case: &str) {
    assert_eq!(response.status, 200, "{case}: {}", response.text());
    assert_eq!(response.json()["upstream"], "ok", "{case}");
}

/// 401 `WWW-Authenticate: Bearer realm="<api>", error="invalid_token", error_description=".."`.
#[track_caller]
fn assert_invalid_token(response: &TestResponse, realm: &str, case: &str) {
    assert_eq!(response.status, 401, "{case}: {}", response.text());
    let challenge = response.header("www-authenticate").unwrap_or_default();
    let expected =
        format!("Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"");
    assert!(
        challenge.starts_with(&expected),
        "{case}: WWW-Authenticate is {challenge:?}"
    );
    assert_eq!(response.json()["error"], "invalid_token", "{case}");
    assert!(response.json()["error_description"].is_string(), "{case}");
}

/// 429 with `Retry-After` and the three `X-RateLimit-*` headers; returns Retry-After.
#[track_caller]
fn assert_limited(response: &TestResponse, limit: u64) -> u64 {
    assert_eq!(response.status, 429, "{}", response.text());
    assert_eq!(response.json()["error"], "rate_limited");
    let number = |name: &str| -> u64 {
        response
            .header(name)
            .unwrap_or_else(|| panic!("{name} missing: {response:?}"))
            .parse()
            .unwrap_or_else(|_| panic!("{name} is not a number: {response:?}"))
    };
    let retry_after = number("retry-after");
    assert!(retry_after >= 1, "{response:?}");
    assert_eq!(number("x-ratelimit-limit"), limit, "{response:?}");
    assert_eq!(number("x-ratelimit-remaining"), 0, "{response:?}");
    number("x-ratelimit-reset");
    retry_after
}

/// The `X-RateLimit-*` headers of a successful response: (limit, remaining, reset).
#[track_caller]
fn headroom(response: &TestResponse) -> (u64, u64, u64) {
    assert_eq!(response.status, 200, "{}", response.text());
    let number = |name: &str| -> u64 {
        response
            .header(name)
            .unwrap_or_else(|| panic!("{name} missing on a limited API: {response:?}"))
            .parse()
            .unwrap()
    };
    (
        number("x-ratelimit-limit"),
        number("x-ratelimit-remaining"),
        number("x-ratelimit-reset"),
    )
}

// =============================================================================================
// 1. Token validation at the gateway, one claim rule at a time

#[tokio::test]
async fn a_forged_token_with_the_gateways_claim_set_passes_and_reaches_the_upstream() {
    let h = start(&[ApiYaml::new("movies")], None).await;
    let token = h.forge.sign(&h.forge.claims("movies"));

    let response = call(&h.gw, "/movies/items", &token).await;
    assert_passes(&response, "valid forged token");
    assert_eq!(h.upstream.count(), 1);
    assert_eq!(h.upstream.last().target, "/items");

    // RFC 9068 §4 also allows the media-type form of typ.
    let mut header = h.forge.header();
    header["typ"] = json!("application/at+jwt");
    let token = h.forge.sign_with_header(&header, &h.forge.claims("movies"));
    assert_passes(
        &call(&h.gw, "/movies/items", &token).await,
        "typ application/at+jwt",
    );
}

#[tokio::test]
async fn expiry_and_not_before_are_enforced_with_at_most_5s_of_leeway() {
    let h = start(&[ApiYaml::new("movies")], None).await;
    let (f, now) = (&h.forge, now());

    // Within the leeway: expired 3 s ago, or valid from 2 s in the future.
    let token = f.sign(&set(f.claims("movies"), "exp", json!(now - 3)));
    assert_passes(&call(&h.gw, "/movies/", &token).await, "expired 3 s ago");
    let token = f.sign(&set(f.claims("movies"), "nbf", json!(now + 2)));
    assert_passes(&call(&h.gw, "/movies/", &token).await, "nbf 2 s ahead");

    let seen = h.upstream.count();
    // Just past the 5 s leeway, so a longer leeway fails the test. The clock only moves forward, so
    // exp −6 s is exact; nbf takes +7 s because the gateway's clock may read one second later than
    // `now` here, and nbf +6 s would then be inside the leeway.
    let cases = [
        (
            "expired 6 s ago",
            set(f.claims("movies"), "exp", json!(now - 6)),
        ),
        (
            "nbf 7 s in the future",
            set(f.claims("movies"), "nbf", json!(now + 7)),
        ),
        (
            "expired 10 s ago",
            set(f.claims("movies"), "exp", json!(now - 10)),
        ),
        (
            "expired an hour ago",
            set(f.claims("movies"), "exp", json!(now - 3600)),
        ),
        (
            "nbf 60 s in the future",
            set(f.claims("movies"), "nbf", json!(now + 60)),
        ),
    ];
    for (case, claims) in cases {
        assert_invalid_token(
            &call(&h.gw, "/movies/", &f.sign(&claims)).await,
            "movies",
            case,
        );
    }
    assert_eq!(
        h.upstream.count(),
        seen,
        "no refused token reaches the upstream"
    );
}

#[tokio::test]
async fn exp_and_nbf_are_required_and_numeric() {
    let h = start(&[ApiYaml::new("movies")], None).await;
    let f = &h.forge;
    let far = now() + 600;
    let cases = [
        (
            "exp as a string",
            set(f.claims("movies"), "exp", json!(far.to_string())),
        ),
        (
            "nbf as a string",
            set(f.claims("movies"), "nbf", json!(now().to_string())),
        ),
        ("exp missing", without(f.claims("movies"), "exp")),
        ("nbf missing", without(f.claims("movies"), "nbf")),
        ("exp null", set(f.claims("movies"), "exp", Value::Null)),
    ];
    for (case, claims) in cases {
        assert_invalid_token(
            &call(&h.gw, "/movies/", &f.sign(&claims)).await,
            "movies",
            case,
        );
    }
    assert_eq!(h.upstream.count(), 0);
}

#[tokio::test]
async fn issuer_and_audience_must_be_this_api() {
    let h = start(&[ApiYaml::new("movies"), ApiYaml::new("books")], None).await;
    let f = &h.forge;
    let cases = [
        (
            "iss of another issuer",
            set(
                f.claims("movies"),
                "iss",
                json!("https://evil.example/movies"),
            ),
        ),
        (
            "iss of another API on this gateway",
            set(
                f.claims("movies"),
                "iss",
                json!(format!("{PUBLIC_URL}/books")),
            ),
        ),
        ("iss missing", without(f.claims("movies"), "iss")),
        ("aud missing", without(f.claims("movies"), "aud")),
        ("aud of another API (books)", f.claims("books")),
        (
            "aud of an unknown API",
            set(
                set(f.claims("movies"), "aud", json!("films")),
                "iss",
                json!(format!("{PUBLIC_URL}/films")),
            ),
        ),
    ];
    for (case, claims) in cases {
        assert_invalid_token(
            &call(&h.gw, "/movies/", &f.sign(&claims)).await,
            "movies",
            case,
        );
    }
    assert_eq!(h.upstream.count(), 0);
    // The books token is fine where it belongs.
    assert_passes(
        &call(&h.gw, "/books/", &f.sign(&f.claims("books"))).await,
        "books at books",
    );
}

#[tokio::test]
async fn typ_must_be_at_jwt() {
    let h = start(&[ApiYaml::new("movies")], None).await;
    let f = &h.forge;
    let mut cases = Vec::new();
    for typ in [
        json!("JWT"),
        json!("jwt"),
        json!(""),
        json!("application/jwt"),
        json!(1),
    ] {
        let mut header = f.header();
        header["typ"] = typ.clone();
        cases.push((format!("typ {typ}"), header));
    }
    let mut header = f.header();
    header.as_object_mut().unwrap().remove("typ");
    cases.push(("typ missing".to_string(), header));

    for (case, header) in cases {
        let token = f.sign_with_header(&header, &f.claims("movies"));
        assert_invalid_token(&call(&h.gw, "/movies/", &token).await, "movies", &case);
    }
    assert_eq!(h.upstream.count(), 0);
}

#[tokio::test]
async fn the_key_comes_from_our_kid_table_never_from_the_token() {
    let h = start(&[ApiYaml::new("movies")], None).await;
    let f = &h.forge;
    let (attacker, attacker_key) = foreign_key();

    // jku / jwk / x5u with a signature by our key are ignored: the token is valid.
    let mut header = f.header();
    header["jku"] = json!("https://evil.example/jwks.json");
    header["jwk"] = attacker_key.public_jwk().clone();
    header["x5u"] = json!("https://evil.example/cert.pem");
    let token = f.sign_with_header(&header, &f.claims("movies"));
    assert_passes(
        &call(&h.gw, "/movies/", &token).await,
        "jku/jwk/x5u ignored",
    );

    let seen = h.upstream.count();
    let with_kid = |kid: Option<&str>| {
        let mut header = f.header();
        match kid {
            Some(kid) => header["kid"] = json!(kid),
            None => {
                header.as_object_mut().unwrap().remove("kid");
            }
        }
        header
    };
    let mut attacker_header = with_kid(Some(&attacker_key.kid));
    attacker_header["jwk"] = attacker_key.public_jwk().clone();
    attacker_header["jku"] = json!("https://evil.example/jwks.json");
    let cases = [
        (
            "our key, unknown kid",
            f.sign_with_header(&with_kid(Some("not-a-kid-of-ours")), &f.claims("movies")),
        ),
        (
            "our key, no kid",
            f.sign_with_header(&with_kid(None), &f.claims("movies")),
        ),
        (
            "attacker's key with its own kid, jwk and jku in the header",
            sign_raw(
                &attacker_header,
                &f.claims("movies"),
                &attacker,
                Algorithm::ES256,
            ),
        ),
        (
            "attacker's key claiming our kid",
            sign_raw(
                &f.header(),
                &f.claims("movies"),
                &attacker,
                Algorithm::ES256,
            ),
        ),
    ];
    for (case, token) in cases {
        assert_invalid_token(&call(&h.gw, "/movies/", &token).await, "movies", case);
    }
    assert_eq!(h.upstream.count(), seen);
}

#[tokio::test]
async fn alg_none_and_hs256_signed_with_our_public_key_are_refused() {
    let h = start(&[ApiYaml::new("movies")], None).await;
    let f = &h.forge;
    let mut cases = Vec::new();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let mut header = f.header();
        header["alg"] = json!(alg);
        cases.push((format!("alg {alg}"), unsigned(&header, &f.claims("movies"))));
    }
    // The algorithm confusion attack: HMAC with the published public key as the secret.
    let jwks = get(&h.gw.url("/.well-known/jwks.json")).await.json();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == f.kid.as_str())
        .expect("our kid is published")
        .clone();
    for (form, secret) in public_key_forms(&jwk) {
        let mut header = f.header();
        header["alg"] = json!("HS256");
        let token = sign_raw(
            &header,
            &f.claims("movies"),
            &EncodingKey::from_secret(&secret),
            Algorithm::HS256,
        );
        cases.push((format!("HS256 keyed with the {form}"), token));
    }
    for (case, token) in cases {
        assert_invalid_token(&call(&h.gw, "/movies/", &token).await, "movies", &case);
    }
    assert_eq!(h.upstream.count(), 0);
}

#[tokio::test]
async fn a_tampered_token_fails_its_signature() {
    let h = start(&[ApiYaml::new("movies")], None).await;
    let f = &h.forge;
    let token = f.sign(&set(f.claims("movies"), "scope", json!("read")));
    let parts: Vec<&str> = token.split('.').collect();

    // Same header and signature, payload with a wider scope and another subject.
    let tampered_claims = set(
        set(f.claims("movies"), "scope", json!("read write admin")),
        "sub",
        json!("root"),
    );
    let tampered = format!("{}.{}.{}", parts[0], b64_json(&tampered_claims), parts[2]);
    // Same payload and signature, a member added to the header: the header is signed too.
    let mut header = f.header();
    header["cty"] = json!("x");
    let reheadered = format!("{}.{}.{}", b64_json(&header), parts[1], parts[2]);
    let mut cut = parts[2].to_string();
    cut.truncate(cut.len() - 4);
    let truncated = format!("{}.{}.{cut}", parts[0], parts[1]);

    for (case, bad) in [
        ("tampered payload", tampered),
        ("tampered header", reheadered),
        ("truncated signature", truncated),
        ("no signature", format!("{}.{}.", parts[0], parts[1])),
        ("two parts", format!("{}.{}", parts[0], parts[1])),
        ("garbage", "not-a-jwt".to_string()),
    ] {
        assert_invalid_token(&call(&h.gw, "/movies/", &bad).await, "movies", case);
    }
    assert_eq!(h.upstream.count(), 0);
    assert_passes(&call(&h.gw, "/movies/", &token).await, "the original");
}

#[tokio::test]
async fn a_crit_header_is_refused_even_with_a_valid_signature() {
    let h = start(&[ApiYaml::new("movies")], None).await;
    let f = &h.forge;
    for crit in [
        json!(["exp"]),
        json!(["b64"]),
        json!(["urn:example:unknown"]),
        json!([]),
    ] {
        let mut header = f.header();
        header["crit"] = crit.clone();
        let token = f.sign_with_header(&header, &f.claims("movies"));
        assert_invalid_token(
            &call(&h.gw, "/movies/", &token).await,
            "movies",
            &format!("crit {crit}"),
        );
    }
    assert_eq!(h.upstream.count(), 0);
}

// =============================================================================================
// 2. No credential, missing scope, two credentials

#[tokio::test]
async fn no_credential_is_401_without_an_error_code() {
    let h = start(&[ApiYaml::new("movies")], None).await;
    for headers in [
        vec![],
        // Another scheme in the Authorization header is not our credential.
        vec![("authorization", "Basic YWxpY2U6c2VjcmV0")],
        vec![("authorization", "Bearer")],
    ] {
        let response = get_with(&h.gw.url("/movies/items"), &headers).await;
        assert_eq!(response.status, 401, "{headers:?}: {}", response.text());
        assert_eq!(
            response.header("www-authenticate"),
            Some("Bearer realm=\"movies\""),
            "{headers:?}"
        );
        assert!(response.json()["error"].is_string());
        assert!(response.json()["error_description"].is_string());
    }
    assert_eq!(h.upstream.count(), 0);
}

#[tokio::test]
async fn a_token_without_a_required_scope_is_403_insufficient_scope() {
    let h = start(
        &[ApiYaml::new("movies").auth("required_scopes: [write]")],
        None,
    )
    .await;
    let reader = client_token(&h.gw, "movies", "reader", "read").await;

    let response = call(&h.gw, "/movies/items", &reader).await;
    assert_eq!(response.status, 403, "{}", response.text());
    assert_eq!(
        response.header("www-authenticate"),
        Some("Bearer realm=\"movies\", error=\"insufficient_scope\", scope=\"write\"")
    );
    assert_eq!(response.json()["error"], "insufficient_scope");
    assert_eq!(h.upstream.count(), 0);

    let writer = client_token(&h.gw, "movies", "service", "read write").await;
    assert_passes(
        &call(&h.gw, "/movies/items", &writer).await,
        "token with write",
    );
}

#[tokio::test]
async fn the_same_token_in_header_and_query_is_400_invalid_request() {
    let h = start(
        &[ApiYaml::new("movies").auth("query: access_token, cookie: tg_access")],
        None,
    )
    .await;
    let token = h.forge.sign(&h.forge.claims("movies"));
    let other = h.forge.sign(&h.forge.claims("movies"));
    let bearer = format!("Bearer {token}");
    let cookie = format!("tg_access={token}");

    let cases = [
        (
            "header and query",
            format!("/movies/items?access_token={token}"),
            vec![("authorization", bearer.as_str())],
        ),
        (
            "header and cookie",
            "/movies/items".to_string(),
            vec![
                ("authorization", bearer.as_str()),
                ("cookie", cookie.as_str()),
            ],
        ),
        (
            "query twice",
            format!("/movies/items?access_token={token}&access_token={token}"),
            vec![],
        ),
        (
            "two different tokens",
            format!("/movies/items?access_token={other}"),
            vec![("authorization", bearer.as_str())],
        ),
    ];
    for (case, path, headers) in cases {
        let response = get_with(&h.gw.url(&path), &headers).await;
        assert_eq!(response.status, 400, "{case}: {}", response.text());
        assert_eq!(response.json()["error"], "invalid_request", "{case}");
    }
    assert_eq!(h.upstream.count(), 0);
}

// =============================================================================================
// 3. Revocation takes effect on the next request

#[tokio::test]
async fn revoking_the_refresh_token_ends_the_session_at_the_gateway_at_once() {
    let h = start(&[ApiYaml::new("movies")], None).await;
    let first = password_grant(&h.gw, "movies").await;
    let access1 = text(&first["access_token"]);
    assert_passes(&call(&h.gw, "/movies/", access1).await, "before revocation");
    // A second access token of the same session, from a refresh.
    let second = refresh(&h.gw, "movies", text(&first["refresh_token"])).await;
    let access2 = text(&second["access_token"]);
    assert_passes(
        &call(&h.gw, "/movies/", access2).await,
        "refreshed, before revocation",
    );

    revoke(&h.gw, "movies", text(&second["refresh_token"])).await;

    assert_invalid_token(
        &call(&h.gw, "/movies/", access2).await,
        "movies",
        "session revoked",
    );
    assert_invalid_token(
        &call(&h.gw, "/movies/", access1).await,
        "movies",
        "session revoked (older token)",
    );
    assert_eq!(h.upstream.count(), 2);
}

#[tokio::test]
async fn revoking_an_access_token_refuses_it_at_once_and_only_it() {
    let h = start(&[ApiYaml::new("movies")], None).await;
    let tokens = password_grant(&h.gw, "movies").await;
    let access = text(&tokens["access_token"]);
    assert_passes(&call(&h.gw, "/movies/", access).await, "before revocation");

    revoke(&h.gw, "movies", access).await;
    assert_invalid_token(
        &call(&h.gw, "/movies/", access).await,
        "movies",
        "access token revoked",
    );

    // The session lives on: a refresh gives a working access token.
    let next = refresh(&h.gw, "movies", text(&tokens["refresh_token"])).await;
    assert_passes(
        &call(&h.gw, "/movies/", text(&next["access_token"])).await,
        "new access token",
    );
}

// =============================================================================================
// 4. Credential sources and stripping

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive_and_the_header_is_stripped() {
    let h = start(&[ApiYaml::new("movies")], None).await;
    let token = h.forge.sign(&h.forge.claims("movies"));
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let response = get_with(
            &h.gw.url("/movies/items"),
            &[
                ("authorization", &format!("{scheme} {token}")),
                ("x-other", "kept"),
            ],
        )
        .await;
        assert_passes(&response, scheme);
        let seen = h.upstream.last();
        assert_eq!(
            seen.header("authorization"),
            None,
            "{scheme}: the credential reached the upstream"
        );
        assert_eq!(seen.header("x-other"), Some("kept"));
    }
}

#[tokio::test]
async fn a_query_credential_is_stripped_and_other_parameters_kept() {
    let h = start(&[ApiYaml::new("movies").auth("query: access_token")], None).await;
    let token = h.forge.sign(&h.forge.claims("movies"));

    let response = get(&h
        .gw
        .url(&format!("/movies/items?x=1&access_token={token}&y=a%20b")))
    .await;
    assert_passes(&response, "query credential");
    let seen = h.upstream.last();
    assert!(!seen.target.contains("access_token"), "{}", seen.target);
    assert!(!seen.target.contains(&token), "{}", seen.target);
    assert!(seen.target.starts_with("/items?x=1&y=a"), "{}", seen.target);

    let response = get(&h.gw.url(&format!("/movies/items?access_token={token}"))).await;
    assert_passes(&response, "query credential alone");
    assert_eq!(h.upstream.last().target, "/items");
}

#[tokio::test]
async fn a_cookie_credential_is_stripped_and_other_cookies_kept() {
    let h = start(&[ApiYaml::new("movies").auth("cookie: tg_access")], None).await;
    let token = h.forge.sign(&h.forge.claims("movies"));

    let cookie = format!("theme=dark; tg_access={token}; lang=en");
    let response = get_with(&h.gw.url("/movies/items"), &[("cookie", &cookie)]).await;
    assert_passes(&response, "cookie credential");
    assert_eq!(
        h.upstream.last().header("cookie"),
        Some("theme=dark; lang=en")
    );

    let cookie = format!("tg_access={token}");
    let response = get_with(&h.gw.url("/movies/items"), &[("cookie", &cookie)]).await;
    assert_passes(&response, "cookie credential alone");
    assert_eq!(h.upstream.last().headers.get("cookie"), None);
}

#[tokio::test]
async fn with_strip_credentials_false_the_header_reaches_the_upstream() {
    let h = start(
        &[ApiYaml::new("movies").auth("strip_credentials: false")],
        None,
    )
    .await;
    let token = h.forge.sign(&h.forge.claims("movies"));
    assert_passes(&call(&h.gw, "/movies/items", &token).await, "not stripped");
    assert_eq!(
        h.upstream.last().header("authorization"),
        Some(format!("Bearer {token}").as_str())
    );
}

// =============================================================================================
// 5. forward_claims

#[tokio::test]
async fn forward_claims_reach_the_upstream_and_client_copies_are_dropped() {
    let h = start(
        &[ApiYaml::new("movies").auth(
            "forward_claims: { X-User-Id: sub, X-Client-Id: client_id, X-User-Email: email }",
        )],
        None,
    )
    .await;
    let alice = password_grant(&h.gw, "movies").await;
    let bearer = format!("Bearer {}", text(&alice["access_token"]));
    let response = get_with(
        &h.gw.url("/movies/me"),
        &[
            ("authorization", &bearer),
            ("x-user-id", "mallory"),
            ("X-Client-Id", "evil-client"),
            ("x-user-email", "mallory@evil.example"),
        ],
    )
    .await;
    assert_passes(&response, "alice");
    let seen = h.upstream.last();
    assert_eq!(seen.header("x-user-id"), Some("alice"));
    assert_eq!(seen.header("x-client-id"), Some("app"));
    assert_eq!(seen.header("x-user-email"), Some("alice@example.com"));
    for name in ["x-user-id", "x-client-id", "x-user-email"] {
        assert_eq!(seen.headers.get_all(name).iter().count(), 1, "{name} once");
    }

    // `Connection` naming one of our headers cannot remove it (docs/security.md#hop-by-hop).
    let response = get_with(
        &h.gw.url("/movies/me"),
        &[
            ("authorization", &bearer),
            ("connection", "x-user-id, x-client-id"),
        ],
    )
    .await;
    assert_passes(&response, "Connection: x-user-id");
    let seen = h.upstream.last();
    assert_eq!(seen.header("x-user-id"), Some("alice"));
    assert_eq!(seen.header("x-client-id"), Some("app"));

    // A token without the claim: the client's copy is still dropped, nothing is set.
    let service = client_token(&h.gw, "movies", "service", "read").await;
    let response = get_with(
        &h.gw.url("/movies/me"),
        &[
            ("authorization", &format!("Bearer {service}")),
            ("x-user-email", "mallory@evil.example"),
        ],
    )
    .await;
    assert_passes(&response, "client_credentials");
    let seen = h.upstream.last();
    assert_eq!(
        seen.header("x-user-id"),
        Some("service"),
        "sub of client_credentials is the client"
    );
    assert_eq!(seen.header("x-client-id"), Some("service"));
    assert_eq!(seen.header("x-user-email"), None);
}

// =============================================================================================
// 6. Rate limits and quotas

#[tokio::test]
async fn the_session_rate_limit_refuses_the_third_request_and_recovers_after_the_period() {
    let h = start(
        &[ApiYaml::new("movies").top("rate_limit: { rate: 2, per: 1s }")],
        None,
    )
    .await;
    let token = client_token(&h.gw, "movies", "service", "read").await;

    let (limit, remaining, _) = headroom(&call(&h.gw, "/movies/", &token).await);
    assert_eq!((limit, remaining), (2, 1));
    let (limit, remaining, _) = headroom(&call(&h.gw, "/movies/", &token).await);
    assert_eq!((limit, remaining), (2, 0));
    let retry_after = assert_limited(&call(&h.gw, "/movies/", &token).await, 2);
    assert!(
        retry_after <= 1,
        "Retry-After {retry_after} for a 1 s period"
    );
    assert_eq!(
        h.upstream.count(),
        2,
        "the refused request did not reach the upstream"
    );

    h.clock.advance(Duration::from_secs(1));
    assert_passes(&call(&h.gw, "/movies/", &token).await, "after the period");
}

#[tokio::test]
async fn per_session_limits_survive_a_refresh_and_sessions_are_independent() {
    let h = start(
        &[ApiYaml::new("movies").top("rate_limit: { rate: 2, per: 1m }")],
        None,
    )
    .await;
    let session = password_grant(&h.gw, "movies").await;
    let access = text(&session["access_token"]);
    assert_passes(&call(&h.gw, "/movies/", access).await, "1st");
    assert_passes(&call(&h.gw, "/movies/", access).await, "2nd");
    assert_limited(&call(&h.gw, "/movies/", access).await, 2);

    // A refresh keeps the sid, so the new access token is still limited.
    let refreshed = refresh(&h.gw, "movies", text(&session["refresh_token"])).await;
    assert_limited(
        &call(&h.gw, "/movies/", text(&refreshed["access_token"])).await,
        2,
    );

    // A new grant is a new session with its own budget.
    let other = password_grant(&h.gw, "movies").await;
    let (limit, remaining, _) =
        headroom(&call(&h.gw, "/movies/", text(&other["access_token"])).await);
    assert_eq!((limit, remaining), (2, 1));
}

#[tokio::test]
async fn the_global_rate_limit_counts_across_sessions() {
    let h = start(
        &[ApiYaml::new("movies").top("global_rate_limit: { rate: 3, per: 1m }")],
        None,
    )
    .await;
    let a = client_token(&h.gw, "movies", "service", "read").await;
    let b = client_token(&h.gw, "movies", "reader", "read").await;
    // Successful responses show what is left of the API's budget, whichever session asks.
    for (token, left) in [(&a, 2), (&b, 1), (&a, 0)] {
        let (limit, remaining, _) = headroom(&call(&h.gw, "/movies/", token).await);
        assert_eq!((limit, remaining), (3, left));
    }
    assert_limited(&call(&h.gw, "/movies/", &b).await, 3);
    assert_limited(&call(&h.gw, "/movies/", &a).await, 3);
    // A fresh session does not help: the limit is the API's.
    let c = h.forge.sign(&h.forge.claims("movies"));
    assert_limited(&call(&h.gw, "/movies/", &c).await, 3);
    assert_eq!(h.upstream.count(), 3);
}

#[tokio::test]
async fn the_quota_refuses_the_fourth_request_with_rate_limit_headers() {
    let h = start(
        &[ApiYaml::new("movies").top("quota: { max: 3, period: 1d }")],
        None,
    )
    .await;
    let token = client_token(&h.gw, "movies", "service", "read").await;
    for expected in [2, 1, 0] {
        let (limit, remaining, reset) = headroom(&call(&h.gw, "/movies/", &token).await);
        assert_eq!((limit, remaining), (3, expected));
        assert!(reset > 0 && reset <= 86_400, "reset {reset}");
    }
    let response = call(&h.gw, "/movies/", &token).await;
    let retry_after = assert_limited(&response, 3);
    assert!(
        retry_after > 86_000 && retry_after <= 86_400,
        "Retry-After {retry_after}"
    );
    assert_eq!(response.json()["error_description"], "quota exceeded");
    assert_eq!(h.upstream.count(), 3);
}

#[tokio::test]
async fn rate_limit_refusals_do_not_count_against_the_quota() {
    let h = start(
        &[ApiYaml::new("movies")
            .top("rate_limit: { rate: 1, per: 1s }")
            .top("quota: { max: 2, period: 1d }")],
        None,
    )
    .await;
    let token = client_token(&h.gw, "movies", "service", "read").await;
    assert_passes(&call(&h.gw, "/movies/", &token).await, "1st: quota 1 of 2");
    for _ in 0..3 {
        let response = call(&h.gw, "/movies/", &token).await;
        assert_limited(&response, 1);
        assert_eq!(response.json()["error_description"], "rate limit exceeded");
    }
    h.clock.advance(Duration::from_secs(1));
    // Had the three refusals been counted, the quota would be spent.
    assert_passes(&call(&h.gw, "/movies/", &token).await, "2nd: quota 2 of 2");
    h.clock.advance(Duration::from_secs(1));
    let response = call(&h.gw, "/movies/", &token).await;
    assert_limited(&response, 2);
    assert_eq!(response.json()["error_description"], "quota exceeded");
    assert_eq!(h.upstream.count(), 2);
}

// =============================================================================================
// 7. Policies

const POLICIES: &str = "\
- { id: gold, rate_limit: { rate: 4, per: 1m } }
- { id: multi, access: [movies, books] }
";

/// movies (rate 1/min; clients `gold` with policy gold, `roamer` with policy multi), books (no
/// accept_from), music (accept_from: [movies]).
async fn policy_gateway() -> Harness {
    start(
        &[
            ApiYaml::new("movies")
                .top("rate_limit: { rate: 1, per: 1m }")
                .client_with_policy("gold", "gold")
                .client_with_policy("roamer", "multi"),
            ApiYaml::new("books"),
            ApiYaml::new("music").auth("accept_from: [movies]"),
        ],
        Some(POLICIES),
    )
    .await
}

#[tokio::test]
async fn a_clients_policy_overrides_the_apis_rate_limit() {
    let h = policy_gateway().await;
    let plain = client_token(&h.gw, "movies", "service", "read").await;
    let gold = client_token(&h.gw, "movies", "gold", "read").await;

    assert_eq!(headroom(&call(&h.gw, "/movies/", &plain).await).0, 1);
    assert_limited(&call(&h.gw, "/movies/", &plain).await, 1);

    for expected in [3, 2, 1, 0] {
        let (limit, remaining, _) = headroom(&call(&h.gw, "/movies/", &gold).await);
        assert_eq!((limit, remaining), (4, expected));
    }
    assert_limited(&call(&h.gw, "/movies/", &gold).await, 4);
}

#[tokio::test]
async fn multi_api_access_through_the_policy_and_accept_from() {
    let h = policy_gateway().await;
    let roamer = client_token(&h.gw, "movies", "roamer", "read").await;
    let plain = client_token(&h.gw, "movies", "service", "read").await;

    // The policy lists books: movies' token works there; the plain client's does not.
    assert_passes(&call(&h.gw, "/books/", &roamer).await, "roamer at books");
    assert_invalid_token(
        &call(&h.gw, "/books/", &plain).await,
        "books",
        "no policy access to books",
    );
    // music accepts every movies token (accept_from), but not the other way round.
    assert_passes(
        &call(&h.gw, "/music/", &plain).await,
        "movies token at music",
    );
    assert_passes(&call(&h.gw, "/music/", &roamer).await, "roamer at music");
    let music = client_token(&h.gw, "music", "service", "read").await;
    assert_invalid_token(
        &call(&h.gw, "/movies/", &music).await,
        "movies",
        "music token at movies",
    );
    // books' own tokens are not accepted by music.
    let books = client_token(&h.gw, "books", "service", "read").await;
    assert_invalid_token(
        &call(&h.gw, "/music/", &books).await,
        "music",
        "books token at music",
    );
}

#[tokio::test]
async fn a_policy_change_applied_by_reload_takes_effect_for_existing_tokens() {
    let h = policy_gateway().await;
    let roamer = client_token(&h.gw, "movies", "roamer", "read").await;
    assert_passes(&call(&h.gw, "/books/", &roamer).await, "before the reload");

    h.gw.config.write(
        "policies.yaml",
        "- { id: gold, rate_limit: { rate: 4, per: 1m } }\n- { id: multi, access: [movies] }\n",
    );
    let reload = h.gw.admin_post("/reload").await;
    assert_eq!(reload.status, 200, "{}", reload.text());

    assert_invalid_token(
        &call(&h.gw, "/books/", &roamer).await,
        "books",
        "access removed by reload",
    );
    assert_passes(
        &call(&h.gw, "/movies/", &roamer).await,
        "still fine at its own API",
    );
}

// =============================================================================================
// 8. Metrics

#[tokio::test]
async fn rejections_are_counted_by_api_and_reason() {
    let h = start(
        &[
            ApiYaml::new("movies")
                .auth("required_scopes: [write]")
                .top("rate_limit: { rate: 1, per: 1m }"),
            ApiYaml::new("books").top("quota: { max: 1, period: 1d }"),
        ],
        None,
    )
    .await;
    let f = &h.forge;

    // movies: one of each of no_credential, invalid_token, insufficient_scope, rate_limit.
    assert_eq!(get(&h.gw.url("/movies/")).await.status, 401);
    let expired = f.sign(&set(f.claims("movies"), "exp", json!(now() - 60)));
    assert_eq!(call(&h.gw, "/movies/", &expired).await.status, 401);
    let read_only = f.sign(&set(f.claims("movies"), "scope", json!("read")));
    assert_eq!(call(&h.gw, "/movies/", &read_only).await.status, 403);
    let writer = f.sign(&f.claims("movies"));
    assert_eq!(call(&h.gw, "/movies/", &writer).await.status, 200);
    assert_eq!(call(&h.gw, "/movies/", &writer).await.status, 429);
    // books: quota.
    let reader = f.sign(&f.claims("books"));
    assert_eq!(call(&h.gw, "/books/", &reader).await.status, 200);
    assert_eq!(call(&h.gw, "/books/", &reader).await.status, 429);
    assert_eq!(call(&h.gw, "/books/", &reader).await.status, 429);

    let metrics = h.gw.admin_get("/metrics").await;
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    for line in [
        r#"tollgate_rejected_total{api="movies",reason="no_credential"} 1"#,
        r#"tollgate_rejected_total{api="movies",reason="invalid_token"} 1"#,
        r#"tollgate_rejected_total{api="movies",reason="insufficient_scope"} 1"#,
        r#"tollgate_rejected_total{api="movies",reason="rate_limit"} 1"#,
        r#"tollgate_rejected_total{api="books",reason="quota"} 2"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }
}
