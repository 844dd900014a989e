//! The admin web UI at `/ui/` on the admin listener (docs/admin-ui.md).
//!
//! Server-rendered HTML, one small script and one stylesheet served from the binary; nothing is
//! fetched from elsewhere. The pages call the admin API in-process ([`api`] → [`super::dispatch`]),
//! so the UI can do nothing the API cannot, with the same validation and the same error messages.
//!
//! Security model, in the order a request meets it:
//! 1. Sign-in with the admin secret (constant-time compare) makes a session ([`session`]): a random
//!    id in a cookie `HttpOnly; SameSite=Strict; Path=/ui`, idle expiry, a bounded number of them.
//!    Failed sign-ins count per address ([`session::Throttle`]); beyond the limit: 429.
//! 2. Every page but sign-in and the static files needs a live session; without one: 303 to sign-in.
//! 3. Every change is a POST carrying the session's CSRF token (constant-time compare): without it,
//!    or from another origin (`Origin` / `Sec-Fetch-Site`), 403 and nothing changes.
//! 4. Every answer has the login page's security headers, with a CSP that allows no inline script or
//!    style (`'self'` only) and no framing.

mod clients;
mod overview;
mod policies;
pub(crate) mod session;
mod sessions;

use std::net::IpAddr;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::Value;

use crate::http_util::{self, Body, FormError, full};
use crate::oauth::login_page::{escape, html_response};
use crate::proxy::gateway::Gateway;
use crate::secrets::secret_eq;
use crate::server::ConnInfo;

use crate::clock::now as unix_now;
use session::{Live, Sessions, Throttle};

/// The session cookie's name.
pub const COOKIE: &str = "tollgate_ui";
/// Script and style from this origin only: no inline code at all, so an injected tag does nothing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
/// A sign-in form field longer than this is not the secret (it bounds the comparison too).
const MAX_SECRET_CHARS: usize = 1024;

const CSS: &str = include_str!("static/ui.css");
const JS: &str = include_str!("static/ui.js");
/// An icon of our own, so the browser's automatic `/favicon.ico` request does not hit the admin API
/// (where it would be logged as an admin authentication failure).
const FAVICON: &str = include_str!("static/favicon.svg");

/// The UI's state in the gateway: signed-in sessions and the sign-in throttle.
pub struct UiState {
    pub(crate) sessions: Sessions,
    throttle: Throttle,
}

impl UiState {
    pub fn new(idle_timeout: std::time::Duration) -> UiState {
        UiState {
            sessions: Sessions::new(idle_timeout.as_secs()),
            throttle: Throttle::default(),
        }
    }
}

/// Whether the admin listener hands this path to the UI.
pub(crate) fn owns(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

pub(crate) async fn handle(
    gateway: &Gateway,
    state: &UiState,
    req: Request<Incoming>,
    conn: ConnInfo,
) -> Response<Body> {
    let Some(admin) = &gateway.settings().admin else {
        return not_found();
    };
    let now = unix_now();
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    match (&method, path.as_str()) {
        (&Method::GET, "/ui") => return redirect("/ui/"),
        (&Method::GET, "/ui/static/ui.css") => return asset("text/css; charset=utf-8", CSS),
        (&Method::GET, "/ui/static/favicon.svg") => return asset("image/svg+xml", FAVICON),
        (&Method::GET, "/ui/static/ui.js") => {
            return asset("text/javascript; charset=utf-8", JS);
        }
        (&Method::GET, "/ui/login") => {
            if signed_in(state, &req, now).is_some() {
                return redirect("/ui/");
            }
            return sign_in_page(StatusCode::OK, None);
        }
        (&Method::POST, "/ui/login") => {
            if cross_site(&req) {
                return forbidden("This form was sent from another site.");
            }
            let form = match read_form(gateway, req).await {
                Ok(form) => form,
                Err(response) => return response,
            };
            return sign_in(state, &admin.secret, conn.peer.ip(), &form, now);
        }
        _ => {}
    }
    let Some((sid, live)) = signed_in(state, &req, now) else {
        // Also for a POST: without a session nothing can change, and the browser lands on sign-in.
        return redirect("/ui/login");
    };
    if method == Method::GET {
        let query = Query::parse(req.uri().query());
        return match path.as_str() {
            "/ui/" => overview::overview(gateway, &live, now).await,
            "/ui/apis" => overview::apis(gateway, &live).await,
            "/ui/clients" => clients::page(gateway, &live, &query, None).await,
            "/ui/sessions" => sessions::page(gateway, &live, &query, None).await,
            "/ui/policies" => policies::page(gateway, &live, &query, None).await,
            "/ui/policies/edit" => policies::edit_page(gateway, &live, &query).await,
            _ => not_found(),
        };
    }
    if method != Method::POST {
        let mut response = page_response(
            StatusCode::METHOD_NOT_ALLOWED,
            message_page(
                "Not allowed",
                "Pages are read with GET and changed with POST.",
            ),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
        return response;
    }
    if cross_site(&req) {
        tracing::warn!(target: crate::logging::SECURITY_TARGET, security = "admin_ui_cross_site", path = %path, "admin UI change sent from another site");
        return forbidden("This form was sent from another site.");
    }
    let form = match read_form(gateway, req).await {
        Ok(form) => form,
        Err(response) => return response,
    };
    if !live.csrf_matches(form.get("csrf_token").unwrap_or("")) {
        tracing::warn!(target: crate::logging::SECURITY_TARGET, security = "admin_ui_csrf", path = %path, "admin UI change without the session's CSRF token");
        return forbidden(
            "The form's security token is missing or stale. Reload the page and try again.",
        );
    }
    match path.as_str() {
        "/ui/logout" => {
            state.sessions.remove(&sid);
            let mut response = redirect("/ui/login");
            if let Ok(value) = HeaderValue::from_str(&format!(
                "{COOKIE}=; HttpOnly; SameSite=Strict; Path=/ui; Max-Age=0"
            )) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        "/ui/clients/create" => clients::create(gateway, &live, &form).await,
        "/ui/clients/rotate" => clients::rotate(gateway, &live, &form).await,
        "/ui/clients/delete" => clients::delete(gateway, &live, &form).await,
        "/ui/sessions/revoke" => sessions::revoke(gateway, &live, &form).await,
        "/ui/sessions/revoke-client" => sessions::revoke_client(gateway, &live, &form).await,
        "/ui/policies/save" => policies::save(gateway, &live, &form).await,
        "/ui/policies/delete" => policies::delete(gateway, &live, &form).await,
        _ => not_found(),
    }
}

/// The session named by the request's cookie, when it is live (its idle clock restarts).
fn signed_in<B>(state: &UiState, req: &Request<B>, now: u64) -> Option<(String, Live)> {
    let sid = cookie(req, COOKIE)?;
    let live = state.sessions.touch(&sid, now)?;
    Some((sid, live))
}

fn cookie<B>(req: &Request<B>, name: &str) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_owned())
}

/// A request a browser marked as coming from another site, or whose `Origin` is not this host.
/// `Origin: null` is what browsers send on a form POST from a page with `Referrer-Policy:
/// no-referrer` (ours), so it says nothing; then, as without an `Origin` (curl, old browsers),
/// `Sec-Fetch-Site` and the CSRF token decide.
fn cross_site<B>(req: &Request<B>) -> bool {
    let headers = req.headers();
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site" || v == "same-site")
    {
        return true;
    }
    let Some(origin) = headers
        .get(header::ORIGIN)
        .filter(|o| o.as_bytes() != b"null")
    else {
        return false;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match (origin.to_str().ok(), host) {
        (Some(origin), Some(host)) => origin != format!("http://{host}"),
        _ => true,
    }
}

fn sign_in(state: &UiState, secret: &str, ip: IpAddr, form: &Form, now: u64) -> Response<Body> {
    let throttle = &state.throttle;
    if let Some(wait) = throttle.refused(ip, now) {
        tracing::warn!(target: crate::logging::SECURITY_TARGET, security = "admin_ui_sign_in_throttled", address = %ip, "admin UI sign-in refused: too many failures");
        let mut response = sign_in_page(
            StatusCode::TOO_MANY_REQUESTS,
            Some(&format!(
                "Too many failed sign-ins from this address. Try again in {wait} seconds."
            )),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait));
        return response;
    }
    let presented = form.get("secret").unwrap_or("");
    let ok = presented.chars().count() <= MAX_SECRET_CHARS
        && secret_eq(presented.as_bytes(), secret.as_bytes());
    if !ok {
        throttle.failed(ip, now);
        tracing::warn!(target: crate::logging::SECURITY_TARGET, security = "admin_ui_sign_in_failed", address = %ip, "admin UI sign-in with a wrong secret");
        return sign_in_page(
            StatusCode::UNAUTHORIZED,
            Some("That is not the admin secret."),
        );
    }
    throttle.succeeded(ip);
    let sid = state.sessions.create(now);
    tracing::info!(address = %ip, "admin UI sign-in");
    let mut response = redirect("/ui/");
    if let Ok(value) = HeaderValue::from_str(&format!(
        "{COOKIE}={sid}; HttpOnly; SameSite=Strict; Path=/ui"
    )) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

fn sign_in_page(status: StatusCode, error: Option<&str>) -> Response<Body> {
    let alert = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>\n", escape(e)))
        .unwrap_or_default();
    let html = format!(
        "{head}<main class=\"narrow\">\n<h1>tollgate admin</h1>\n{alert}\
         <form method=\"post\" action=\"/ui/login\">\n\
         <label for=\"secret\">Admin secret</label>\n\
         <input id=\"secret\" name=\"secret\" type=\"password\" autocomplete=\"current-password\" required autofocus>\n\
         <button type=\"submit\">Sign in</button>\n</form>\n</main>\n</body>\n</html>\n",
        head = head("Sign in")
    );
    page_response(status, html)
}

// --- reading requests

/// A urlencoded form or query string. A posted form never repeats a name ([`read_form`]: each of
/// the UI's checkboxes has a name of its own); in a query string the first of a repeated name counts.
pub(super) struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A field's value trimmed, `None` when absent or blank.
    pub(super) fn text(&self, name: &str) -> Option<&str> {
        self.get(name).map(str::trim).filter(|v| !v.is_empty())
    }
}

pub(super) type Query = Form;

impl Form {
    pub(super) fn parse(query: Option<&str>) -> Form {
        Form {
            pairs: form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .map(|(n, v)| (n.into_owned(), v.into_owned()))
                .collect(),
        }
    }
}

/// Reads a posted form the way every form of the gateway is read ([`http_util::read_form`]): the
/// urlencoded content type only (what a browser sends for the UI's forms), at most
/// `http_util::MAX_FORM_BYTES`, no name twice (which value would count is ambiguous, so neither
/// does). A refusal is the UI's error page: 415, 400, or the body's own status (413, 408).
async fn read_form(gateway: &Gateway, req: Request<Incoming>) -> Result<Form, Response<Body>> {
    let timeout = gateway.runtime().config.limits.body_read_timeout;
    let err = match http_util::read_form(req, timeout).await {
        Ok((_, fields)) => {
            return Ok(Form {
                pairs: fields.into_iter().collect(),
            });
        }
        Err(err) => err,
    };
    let (status, message) = match err {
        FormError::NotAForm => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Forms are sent as application/x-www-form-urlencoded.".to_owned(),
        ),
        FormError::Repeated(_) => (StatusCode::BAD_REQUEST, err.description()),
        FormError::Body(body) => {
            let err = crate::error::GatewayError::from(body);
            (err.status(), err.to_string())
        }
    };
    Err(page_response(
        status,
        message_page("Request refused", &message),
    ))
}

// --- calling the admin API

/// What an admin API call answered: its status and JSON body (`Null` when there was none).
pub(super) struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl Answer {
    pub(super) fn ok(&self) -> bool {
        self.status.is_success()
    }

    /// The API's `error_description` (it names the field at fault), for showing on the page.
    pub(super) fn error(&self) -> String {
        self.body["error_description"]
            .as_str()
            .or(self.body["error"].as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| format!("the admin API answered {}", self.status))
    }
}

/// Calls the admin API in-process: the same router and handlers as a request on the listener.
pub(super) async fn api(
    gateway: &Gateway,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Answer {
    let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(bytes));
    let req = match req {
        Ok(req) => req,
        Err(err) => {
            tracing::error!(%err, "admin UI built an invalid request");
            return Answer {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                body: Value::Null,
            };
        }
    };
    // In-process: the address stands for the UI itself. Only `authorize-client` reads it (for its
    // throttles), and the UI never calls that route.
    let response = super::dispatch(gateway, req, std::net::Ipv4Addr::LOCALHOST.into()).await;
    let status = response.status();
    let body = match response.into_body().collect().await {
        Ok(collected) => serde_json::from_slice(&collected.to_bytes()).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    Answer { status, body }
}

/// One path segment, percent-encoded (ids may hold any character).
pub(super) fn seg(s: &str) -> String {
    super::clients::encode_segment(s)
}

/// A query string value, percent-encoded.
pub(super) fn q(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

// --- rendering

fn head(title: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{} · tollgate admin</title>\n\
         <link rel=\"icon\" href=\"/ui/static/favicon.svg\" type=\"image/svg+xml\">\n\
         <link rel=\"stylesheet\" href=\"/ui/static/ui.css\">\n\
         <script src=\"/ui/static/ui.js\" defer></script>\n</head>\n<body>\n",
        escape(title)
    )
}

/// Which page the navigation marks as current.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Nav {
    Overview,
    Apis,
    Clients,
    Sessions,
    Policies,
}

/// A full page: navigation (with the sign-out form), an optional notice, the content.
pub(super) fn layout(
    title: &str,
    nav: Nav,
    live: &Live,
    notice: Option<&Notice>,
    content: &str,
) -> String {
    let link = |target: Nav, href: &str, label: &str| {
        let current = if target == nav {
            " aria-current=\"page\""
        } else {
            ""
        };
        format!("<li><a href=\"{href}\"{current}>{label}</a></li>")
    };
    let notice = notice.map(Notice::html).unwrap_or_default();
    format!(
        "{head}<header>\n<nav aria-label=\"Main\">\n<span class=\"brand\">tollgate</span>\n<ul>\n{}{}{}{}{}</ul>\n\
         <form method=\"post\" action=\"/ui/logout\" class=\"signout\">{}<button type=\"submit\">Sign out</button></form>\n\
         </nav>\n</header>\n<main>\n<h1>{}</h1>\n{notice}{content}</main>\n</body>\n</html>\n",
        link(Nav::Overview, "/ui/", "Overview"),
        link(Nav::Apis, "/ui/apis", "APIs"),
        link(Nav::Clients, "/ui/clients", "Clients"),
        link(Nav::Sessions, "/ui/sessions", "Sessions"),
        link(Nav::Policies, "/ui/policies", "Policies"),
        csrf_field(live),
        escape(title),
        head = head(title),
    )
}

/// A message above a page's content: the outcome of a change.
pub(super) enum Notice {
    Done(String),
    Error(String),
}

impl Notice {
    fn html(&self) -> String {
        match self {
            Notice::Done(text) => {
                format!("<p class=\"notice\" role=\"status\">{}</p>\n", escape(text))
            }
            Notice::Error(text) => {
                format!("<p class=\"error\" role=\"alert\">{}</p>\n", escape(text))
            }
        }
    }
}

/// The hidden CSRF field every form carries.
pub(super) fn csrf_field(live: &Live) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf_token\" value=\"{}\">",
        escape(&live.csrf)
    )
}

fn message_page(title: &str, message: &str) -> String {
    format!(
        "{}<main class=\"narrow\">\n<h1>{}</h1>\n<p role=\"alert\">{}</p>\n<p><a href=\"/ui/\">Back to the overview</a></p>\n</main>\n</body>\n</html>\n",
        head(title),
        escape(title),
        escape(message)
    )
}

/// An HTML answer with the login page's security headers and the UI's stricter CSP.
pub(super) fn page_response(status: StatusCode, html: String) -> Response<Body> {
    let mut response = html_response(status, html);
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    response
}

/// 303 See Other: after a change (so a reload does not repeat it) and to sign-in.
pub(super) fn redirect(location: &str) -> Response<Body> {
    let mut response = page_response(StatusCode::SEE_OTHER, String::new());
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn forbidden(message: &str) -> Response<Body> {
    page_response(StatusCode::FORBIDDEN, message_page("Refused", message))
}

fn not_found() -> Response<Body> {
    page_response(
        StatusCode::NOT_FOUND,
        message_page("Not found", "There is no such page."),
    )
}

fn asset(content_type: &'static str, text: &'static str) -> Response<Body> {
    let mut response = Response::new(full(Bytes::from_static(text.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// A JSON value as short text for a table cell: strings bare, lists joined, null as a dash.
pub(super) fn cell(value: &Value) -> String {
    match value {
        Value::Null => "–".to_owned(),
        Value::String(s) => escape(s),
        Value::Array(items) if items.is_empty() => "–".to_owned(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(", "),
        other => escape(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csp_allows_no_inline_code() {
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
        let response = page_response(StatusCode::OK, String::new());
        let h = response.headers();
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
        assert_eq!(h[header::CACHE_CONTROL], "no-store");
    }

    #[test]
    fn the_static_files_have_no_inline_handlers_to_need() {
        // The pages use no inline script or style attribute, which the CSP would block.
        let html = sign_in_page(StatusCode::OK, Some("<x>"));
        assert_eq!(html.status(), StatusCode::OK);
        assert!(!CSS.is_empty() && !JS.is_empty());
    }

    #[test]
    fn cells_escape_and_join() {
        assert_eq!(cell(&Value::Null), "–");
        assert_eq!(cell(&serde_json::json!(["a", "<b>"])), "a, &lt;b&gt;");
        assert_eq!(cell(&serde_json::json!(3)), "3");
    }

    #[test]
    fn cross_site_requests_are_told_apart() {
        let req = |headers: &[(&str, &str)]| {
            let mut builder = Request::builder().method("POST").uri("/ui/logout");
            for (n, v) in headers {
                builder = builder.header(*n, *v);
            }
            builder.body(()).unwrap()
        };
        assert!(!cross_site(&req(&[("host", "127.0.0.1:8081")])));
        assert!(!cross_site(&req(&[
            ("host", "127.0.0.1:8081"),
            ("origin", "http://127.0.0.1:8081"),
            ("sec-fetch-site", "same-origin"),
        ])));
        assert!(cross_site(&req(&[
            ("host", "127.0.0.1:8081"),
            ("origin", "http://evil.example"),
        ])));
        assert!(cross_site(&req(&[
            ("host", "127.0.0.1:8081"),
            ("sec-fetch-site", "cross-site"),
        ])));
        assert!(!cross_site(&req(&[("origin", "null")])));
        assert!(cross_site(&req(&[
            ("origin", "null"),
            ("sec-fetch-site", "cross-site")
        ])));
        assert!(cross_site(&req(&[("origin", "http://127.0.0.1:8081")])));
    }
}
