//! The HTML of the built-in login and consent page, and of the authorization endpoint's error pages.
//!
//! Plain server-rendered HTML without script: labelled inputs with `autocomplete`, one form that posts
//! back to the authorization endpoint. Every value that came from a request is HTML-escaped, and every
//! page is sent with a strict Content-Security-Policy, `X-Frame-Options: DENY` (no clickjacking of the
//! consent buttons) and `Cache-Control: no-store`.

use http::header::HeaderValue;
use http::{Response, StatusCode};

pub use crate::html::{CONTENT_SECURITY_POLICY, error_page, escape, html_response, message_page};
use crate::html::{STYLE, with_csp};
use crate::http_util::Body;

/// The policy of the login page itself. Chrome and Safari apply `form-action` to the redirects that
/// follow a form submission too (w3c/webappsec-csp#8), and the login form ends in a 303 to the client's
/// redirect URI: that URI's origin (already validated against the client's registration) must be
/// allowed next to `'self'`, or the browser refuses to deliver the code.
pub fn login_page_csp(redirect_uri: &str) -> String {
    let target = form_action_source(redirect_uri)
        .map(|source| format!(" {source}"))
        .unwrap_or_default();
    format!(
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'{target}; frame-ancestors 'none'; base-uri 'none'"
    )
}

/// A CSP source expression that matches `uri`: `scheme://host[:port]` for http(s), `scheme:` for a
/// private-use scheme (and for an IPv6 literal, which host-source syntax cannot express). `None` when
/// the URI does not parse into something safe to put in the header.
pub fn form_action_source(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once(':')?;
    let mut chars = scheme.chars();
    let scheme_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return None;
    }
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Some(format!("{scheme}:"));
    }
    let rest = rest.strip_prefix("//")?;
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    if authority.contains('@') {
        return None;
    }
    if authority.starts_with('[') {
        return Some(format!("{scheme}:"));
    }
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    if !host_ok || !port_ok {
        return None;
    }
    Some(match port {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    })
}

/// What the login and consent page shows.
pub struct LoginPage<'a> {
    /// The API's display name.
    pub api_name: &'a str,
    /// Where the form posts (the authorization endpoint's path).
    pub action: &'a str,
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    /// The scopes the client would receive (before the user's own scopes narrow them).
    pub scopes: &'a [String],
    /// The authorization request's parameters, carried through the form unchanged.
    pub hidden: &'a [(&'a str, &'a str)],
    pub csrf_token: &'a str,
    /// The username typed before (after a failed attempt); the password is never echoed.
    pub username: Option<&'a str>,
    /// A message about the previous attempt.
    pub error: Option<&'a str>,
    /// The user of the browser's login session: the page only asks for consent (no password), and
    /// carries `consent_proof` (see `login_session::consent_proof`).
    pub signed_in_as: Option<(&'a str, &'a str)>,
}

pub fn render(page: &LoginPage<'_>) -> String {
    let api = escape(page.api_name);
    let client = escape(page.client_id);
    let mut html = String::with_capacity(4096);
    html.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    html.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    html.push_str("<meta name=\"referrer\" content=\"no-referrer\">\n");
    html.push_str(&format!(
        "<title>Sign in to {api}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n"
    ));
    html.push_str(&format!("<h1>Sign in to {api}</h1>\n"));
    html.push_str(&format!(
        "<p>The application <strong>{client}</strong> asks for access to your account.</p>\n"
    ));
    html.push_str("<h2 id=\"scopes-heading\">It will be able to</h2>\n");
    if page.scopes.is_empty() {
        html.push_str("<p>use no specific permissions (scopes).</p>\n");
    } else {
        html.push_str("<ul aria-labelledby=\"scopes-heading\">\n");
        for scope in page.scopes {
            html.push_str(&format!("<li><code>{}</code></li>\n", escape(scope)));
        }
        html.push_str("</ul>\n");
    }
    if let Some(error) = page.error {
        html.push_str(&format!(
            "<p class=\"error\" id=\"form-error\" role=\"alert\">{}</p>\n",
            escape(error)
        ));
    }
    html.push_str(&format!(
        "<form method=\"post\" action=\"{}\">\n",
        escape(page.action)
    ));
    for (name, value) in page.hidden {
        html.push_str(&format!(
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">\n",
            escape(name),
            escape(value)
        ));
    }
    html.push_str(&format!(
        "<input type=\"hidden\" name=\"csrf_token\" value=\"{}\">\n",
        escape(page.csrf_token)
    ));
    let described = if page.error.is_some() {
        " aria-describedby=\"form-error\" aria-invalid=\"true\""
    } else {
        ""
    };
    if let Some((user, proof)) = page.signed_in_as {
        html.push_str(&format!(
            "<input type=\"hidden\" name=\"consent_proof\" value=\"{}\">\n",
            escape(proof)
        ));
        html.push_str(&format!(
            "<p>You are signed in as <strong id=\"signed-in-user\">{}</strong>.</p>\n",
            escape(user)
        ));
        html.push_str("<div class=\"buttons\">\n");
        html.push_str("<button type=\"submit\" class=\"allow\" name=\"action\" value=\"allow\">Allow</button>\n");
        html.push_str(
            "<button type=\"submit\" class=\"deny\" name=\"action\" value=\"deny\">Deny</button>\n",
        );
        html.push_str("</div>\n</form>\n");
        html.push_str(&format!(
            "<p class=\"note\">Either way you will be sent back to <code>{}</code>.</p>\n",
            escape(page.redirect_uri)
        ));
        html.push_str("</main>\n</body>\n</html>\n");
        return html;
    }
    html.push_str("<label for=\"username\">Username</label>\n");
    html.push_str(&format!(
        "<input type=\"text\" id=\"username\" name=\"username\" autocomplete=\"username\" \
         autocapitalize=\"none\" spellcheck=\"false\" required autofocus value=\"{}\"{described}>\n",
        escape(page.username.unwrap_or(""))
    ));
    html.push_str("<label for=\"password\">Password</label>\n");
    html.push_str(&format!(
        "<input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"current-password\" required{described}>\n"
    ));
    html.push_str("<div class=\"buttons\">\n");
    html.push_str("<button type=\"submit\" class=\"allow\" name=\"action\" value=\"allow\">Sign in and allow</button>\n");
    // `formnovalidate`: denying needs no credentials.
    html.push_str("<button type=\"submit\" class=\"deny\" name=\"action\" value=\"deny\" formnovalidate>Deny</button>\n");
    html.push_str("</div>\n</form>\n");
    html.push_str(&format!(
        "<p class=\"note\">Either way you will be sent back to <code>{}</code>.</p>\n",
        escape(page.redirect_uri)
    ));
    html.push_str("</main>\n</body>\n</html>\n");
    html
}

/// The login page: as [`html_response`], with [`login_page_csp`] for the request's redirect URI.
pub fn login_response(status: StatusCode, html: String, redirect_uri: &str) -> Response<Body> {
    let csp = HeaderValue::from_str(&login_page_csp(redirect_uri))
        .unwrap_or(HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    with_csp(status, html, csp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;

    fn page<'a>(hidden: &'a [(&'a str, &'a str)], scopes: &'a [String]) -> LoginPage<'a> {
        LoginPage {
            api_name: "Movies <API>",
            action: "/movies/oauth/authorize",
            client_id: "app\"><script>",
            redirect_uri: "https://app.example/cb?a=1&b=<x>",
            scopes,
            hidden,
            csrf_token: "123.abc",
            username: Some("<alice>"),
            error: Some("Incorrect username or password."),
            signed_in_as: None,
        }
    }

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn every_echoed_value_is_escaped() {
        let scopes = vec!["read".to_string(), "<b>".to_string()];
        let hidden = [
            ("state", "\"><script>alert(1)</script>"),
            ("client_id", "app"),
        ];
        let html = render(&page(&hidden, &scopes));
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("<b>"), "{html}");
        assert!(!html.contains("<x>"), "{html}");
        assert!(!html.contains("<alice>"), "{html}");
        assert!(html.contains("value=\"&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;\""));
        assert!(html.contains("Movies &lt;API&gt;"));
        assert!(html.contains("name=\"csrf_token\" value=\"123.abc\""));
    }

    #[test]
    fn the_form_is_accessible() {
        let scopes = vec!["read".to_string()];
        let html = render(&page(&[], &scopes));
        for needle in [
            "<html lang=\"en\">",
            "<label for=\"username\">",
            "<label for=\"password\">",
            "autocomplete=\"username\"",
            "autocomplete=\"current-password\"",
            "role=\"alert\"",
            "aria-describedby=\"form-error\"",
            "method=\"post\" action=\"/movies/oauth/authorize\"",
            "value=\"deny\" formnovalidate",
        ] {
            assert!(html.contains(needle), "missing {needle}");
        }
        assert!(!html.contains("type=\"password\" id=\"password\" name=\"password\" value"));
    }

    #[test]
    fn form_action_allows_the_redirect_origin() {
        assert_eq!(
            form_action_source("https://app.example/cb?x=1").as_deref(),
            Some("https://app.example")
        );
        assert_eq!(
            form_action_source("http://127.0.0.1:5000/cb").as_deref(),
            Some("http://127.0.0.1:5000")
        );
        assert_eq!(
            form_action_source("HTTPS://App.example:8443").as_deref(),
            Some("https://App.example:8443")
        );
        assert_eq!(
            form_action_source("http://[::1]:8000/cb").as_deref(),
            Some("http:")
        );
        assert_eq!(
            form_action_source("com.example.app:/oauth2redirect").as_deref(),
            Some("com.example.app:")
        );
        for bad in [
            "https://a b/",
            "https://x;y/",
            "https://u@h/",
            "https://h:8x/",
            "no-scheme",
            "1x:/a",
        ] {
            assert_eq!(form_action_source(bad), None, "{bad}");
        }
        assert_eq!(
            login_page_csp("https://app.example/cb"),
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' https://app.example; frame-ancestors 'none'; base-uri 'none'"
        );
        assert_eq!(login_page_csp("https://u@h/"), CONTENT_SECURITY_POLICY);
    }

    #[test]
    fn pages_carry_security_headers() {
        let response = html_response(
            StatusCode::BAD_REQUEST,
            error_page(StatusCode::BAD_REQUEST, "<bad>"),
        );
        let headers = response.headers();
        assert_eq!(
            headers[header::CONTENT_SECURITY_POLICY],
            CONTENT_SECURITY_POLICY
        );
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        assert!(error_page(StatusCode::BAD_REQUEST, "<bad>").contains("&lt;bad&gt;"));
    }
}
