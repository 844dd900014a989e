//! HTML pages served by the gateway itself (the login and consent page, the authorization endpoint's
//! error pages, the admin UI): escaping, the shared style, and the security headers every page is sent
//! with. Below `error/mod.rs`, which renders the error pages, and below every page's own module.
//!
//! May import: `http_util` only.
//!
//! Layer: with `error`, which renders the error pages.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::http_util::{Body, full};

/// No script, no images, no framing; inline style only; forms may post only to this origin.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;padding:2rem 1rem;background:#f4f4f5;color:#18181b}\
main{max-width:26rem;margin:0 auto;background:#fff;padding:1.5rem 2rem;border-radius:.5rem;border:1px solid #d4d4d8}\
h1{font-size:1.4rem;margin-top:0}h2{font-size:1rem}\
label{display:block;margin-top:1rem;font-weight:600}\
input[type=text],input[type=password]{box-sizing:border-box;width:100%;padding:.5rem;margin-top:.25rem;font-size:1rem;border:1px solid #71717a;border-radius:.25rem}\
input:focus,button:focus{outline:3px solid #2563eb;outline-offset:2px}\
.buttons{display:flex;gap:.75rem;margin-top:1.5rem}\
button{font-size:1rem;padding:.6rem 1.2rem;border-radius:.25rem;border:1px solid #18181b;cursor:pointer}\
button.allow{background:#1d4ed8;color:#fff;border-color:#1d4ed8}button.deny{background:#fff;color:#18181b}\
.error{color:#991b1b;background:#fef2f2;border:1px solid #fecaca;padding:.5rem;border-radius:.25rem}\
.note{font-size:.9rem;color:#52525b;overflow-wrap:anywhere}";

/// Escapes text for HTML element content and double- or single-quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A page for an authorization request that cannot be answered with a redirect (unknown client,
/// unregistered redirect URI, expired form) or a login that cannot go on (throttled, storage down).
pub fn error_page(status: StatusCode, message: &str) -> String {
    let title = match status.as_u16() {
        429 => "Too many attempts",
        500..=599 => "Temporarily unavailable",
        _ => "Authorization request refused",
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n\
         <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n\
         <h1>{title}</h1>\n<p role=\"alert\">{}</p>\n</main>\n</body>\n</html>\n",
        escape(message)
    )
}

/// An HTML response with the pages' security headers and [`CONTENT_SECURITY_POLICY`].
pub fn html_response(status: StatusCode, html: String) -> Response<Body> {
    with_csp(
        status,
        html,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    )
}

pub fn with_csp(status: StatusCode, html: String, csp: HeaderValue) -> Response<Body> {
    let mut response = Response::new(full(Bytes::from(html)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// A page that only tells the user something (e.g. after logout).
pub fn message_page(title: &str, message: &str) -> String {
    let title = escape(title);
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n\
         <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n\
         <h1>{title}</h1>\n<p>{}</p>\n</main>\n</body>\n</html>\n",
        escape(message)
    )
}
