//! OAuth request helpers shared by the test files: HTTP Basic client authentication, form posts and
//! reading a JWT's claims.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use base64::Engine as _;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use super::{TestResponse, send};

/// `Authorization: Basic` with id and secret form-urlencoded first (RFC 6749 §2.3.1).
pub fn basic(id: &str, secret: &str) -> String {
    let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            encode(id),
            encode(secret)
        ))
    )
}

/// POSTs an `application/x-www-form-urlencoded` body, with an `Authorization` header when given.
pub async fn post_form(url: &str, auth: Option<&str>, pairs: &[(&str, &str)]) -> TestResponse {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    let mut req = Request::post(url).header("content-type", "application/x-www-form-urlencoded");
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    send(req.body(Full::new(Bytes::from(body))).unwrap()).await
}

/// Issues `count` client_credentials tokens from `token_url` over `parallel` concurrent callers
/// (a burst, for the state-per-token tests); every answer must be 200.
pub async fn client_credentials_burst(
    token_url: &str,
    client: &str,
    secret: &str,
    count: usize,
    parallel: usize,
) {
    let auth = basic(client, secret);
    let mut tasks = Vec::new();
    for _ in 0..parallel {
        let (url, auth) = (token_url.to_string(), auth.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..count / parallel {
                let response =
                    post_form(&url, Some(&auth), &[("grant_type", "client_credentials")]).await;
                assert_eq!(response.status, 200, "{}", response.text());
            }
        }));
    }
    for task in tasks {
        task.await.expect("burst task");
    }
}

/// A JWT's payload, decoded without verifying (tests that need verification use the JWKS).
pub fn jwt_claims(jwt: &str) -> serde_json::Value {
    let payload = jwt.split('.').nth(1).expect("jwt payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("claims json")
}

pub fn html_unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The hidden fields of the login form, as a browser would submit them.
pub fn hidden_fields(html: &str) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    for chunk in html.split("<input type=\"hidden\" name=\"").skip(1) {
        let (name, rest) = chunk.split_once('"').expect("hidden field name");
        let rest = rest.strip_prefix(" value=\"").expect("hidden field value");
        let (value, _) = rest.split_once('"').expect("hidden field value end");
        fields.push((html_unescape(name), html_unescape(value)));
    }
    fields
}

/// The argon2id PHC string of each secret, made once per test binary and secret: hashing is
/// deliberately slow, and every gateway a test file starts names the same few secrets.
pub fn hashes<const N: usize>(secrets: [&'static str; N]) -> [&'static str; N] {
    static HASHES: OnceLock<Mutex<HashMap<&'static str, &'static str>>> = OnceLock::new();
    let mut cache = HASHES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    secrets.map(|secret| {
        *cache.entry(secret).or_insert_with(|| {
            let hash = tollgate::secrets::hash_secret(secret).expect("hash");
            // Leaked on purpose: one short string per secret for the life of the test binary.
            Box::leak(hash.into_boxed_str())
        })
    })
}

/// The argon2id PHC string of one secret (see [`hashes`]).
pub fn hashed(secret: &'static str) -> &'static str {
    let [hash] = hashes([secret]);
    hash
}

/// What an OAuth error's `error_description` must say.
#[derive(Debug, Clone, Copy)]
pub enum Said<'a> {
    /// This text and nothing else.
    Exactly(&'a str),
    /// Any text holding this fragment (where the rest varies, e.g. carries a generated value).
    Containing(&'a str),
}

/// Every response of the token, revocation and introspection endpoints (RFC 6749 §5.1) is kept out
/// of caches.
#[track_caller]
pub fn assert_no_store(response: &TestResponse) {
    assert_eq!(
        response.header("cache-control"),
        Some("no-store"),
        "{response:?}"
    );
    assert_eq!(response.header("pragma"), Some("no-cache"), "{response:?}");
}

/// An RFC 6749 §5.2 error: the status, the `error` code, the `error_description` (exactly or by a
/// fragment), and `no-store`.
#[track_caller]
pub fn assert_oauth_error(
    response: &TestResponse,
    status: u16,
    error: &str,
    description: Said<'_>,
) {
    assert_eq!(response.status, status, "{}", response.text());
    let body = response.json();
    assert_eq!(body["error"], error, "{}", response.text());
    let said = body["error_description"]
        .as_str()
        .unwrap_or_else(|| panic!("no error_description in {}", response.text()));
    match description {
        Said::Exactly(expected) => assert_eq!(said, expected, "{}", response.text()),
        Said::Containing(fragment) => assert!(
            said.contains(fragment),
            "error_description {said:?} lacks {fragment:?}"
        ),
    }
    assert_no_store(response);
}

/// POSTs a form to `path` on `gateway` over a connection whose local end is bound to `from` (any
/// 127.0.0.0/8 address on Linux): the gateway sees `from` as the real peer, as it would see
/// another machine. `headers` are added as they are (e.g. an `X-Forwarded-For` the client invents).
pub async fn post_form_from(
    gateway: std::net::SocketAddr,
    from: &str,
    path: &str,
    headers: &[(&str, &str)],
    pairs: &[(&str, &str)],
) -> TestResponse {
    use http_body_util::BodyExt;
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{from}:0").parse().expect("address"))
        .expect("bind the client's address");
    let stream = socket.connect(gateway).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(connection);
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    let mut request = Request::post(format!("http://{gateway}{path}"))
        .header("host", gateway.to_string())
        .header("content-type", "application/x-www-form-urlencoded");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(Full::new(Bytes::from(body))).expect("request"))
        .await
        .expect("response");
    let (parts, body) = response.into_parts();
    TestResponse {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.expect("body").to_bytes(),
    }
}
