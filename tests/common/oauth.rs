//! OAuth request helpers shared by the test files: HTTP Basic client authentication, form posts and
//! reading a JWT's claims.
#![allow(dead_code)]

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
