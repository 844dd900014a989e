//! The admin web UI at `/ui/` (docs/admin-ui.md) over real sockets: sign-in and its cookie, redirects
//! when signed out, CSRF refusals, idle expiry, the sign-in throttle, bad input, the security headers;
//! and `GET /stats` on the admin API, whose counts the overview charts.

mod common;

use bytes::Bytes;
use common::oauth::*;
use common::*;
use http::Request;
use http_body_util::Full;
use serde_json::Value;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// `movies` (OAuth, client_credentials and refresh_token) and `open` (no auth), both on a real
/// upstream; a stored policy can be made through the UI.
async fn gateway(extra: &str) -> (TestGateway, Upstream) {
    let upstream = Upstream::start().await;
    let config = ConfigDir::new(extra);
    config.api(
        "movies",
        &format!(
            "listen_path: /movies/\nupstream: {{ url: \"{}\" }}\noauth:\n  grant_types: [client_credentials, refresh_token]\n  scopes: [read]\n",
            upstream.url()
        ),
    );
    config.api("open", &open_api("/open/", &upstream.url()));
    (TestGateway::start(config).await, upstream)
}

/// A UI request: method, path, optional cookie and form, extra headers.
async fn ui(
    gw: &TestGateway,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: Option<&[(&str, &str)]>,
    headers: &[(&str, &str)],
) -> TestResponse {
    let mut req = Request::builder().method(method).uri(gw.admin_url(path));
    if let Some(cookie) = cookie {
        req = req.header("cookie", cookie);
    }
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let body = match form {
        Some(pairs) => {
            req = req.header("content-type", "application/x-www-form-urlencoded");
            let mut s = form_urlencoded::Serializer::new(String::new());
            for (n, v) in pairs {
                s.append_pair(n, v);
            }
            Bytes::from(s.finish())
        }
        None => Bytes::new(),
    };
    send(req.body(Full::new(body)).unwrap()).await
}

/// A signed-in GET.
async fn ui_get(gw: &TestGateway, cookie: &str, path: &str) -> TestResponse {
    ui(gw, "GET", path, Some(cookie), None, &[]).await
}

/// A signed-in form POST, as a browser on the page would send it.
async fn ui_post(
    gw: &TestGateway,
    cookie: &str,
    path: &str,
    form: &[(&str, &str)],
) -> TestResponse {
    ui(gw, "POST", path, Some(cookie), Some(form), &[]).await
}

/// A signed-in POST whose body and content type are given as they are.
async fn post_raw(
    gw: &TestGateway,
    path: &str,
    cookie: &str,
    content_type: &str,
    body: String,
) -> TestResponse {
    let req = Request::post(gw.admin_url(path))
        .header("cookie", cookie)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    send(req).await
}

/// The sign-in form, sent with `secret`.
async fn post_secret(gw: &TestGateway, secret: &str) -> TestResponse {
    ui(
        gw,
        "POST",
        "/ui/login",
        None,
        Some(&[("secret", secret)]),
        &[],
    )
    .await
}

/// Signs in; returns the `name=value` cookie to send back.
async fn sign_in(gw: &TestGateway) -> String {
    let response = post_secret(gw, ADMIN_SECRET).await;
    assert_eq!(response.status, 303, "{}", response.text());
    assert_eq!(response.header("location"), Some("/ui/"));
    let set = response.header("set-cookie").expect("a session cookie");
    set.split(';').next().unwrap().trim().to_owned()
}

/// The CSRF token of the first form on a page.
fn csrf(html: &str) -> String {
    hidden_fields(html)
        .into_iter()
        .find(|(n, _)| n == "csrf_token")
        .map(|(_, v)| v)
        .expect("a csrf_token field")
}

fn assert_security_headers(response: &TestResponse) {
    assert_eq!(response.header("content-security-policy"), Some(CSP));
    assert_eq!(response.header("x-frame-options"), Some("DENY"));
    assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(response.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(response.header("cache-control"), Some("no-store"));
}

#[tokio::test]
async fn sign_in_sets_a_strict_http_only_cookie_scoped_to_the_ui() {
    let (gw, _up) = gateway("").await;
    let page = ui(&gw, "GET", "/ui/login", None, None, &[]).await;
    assert_eq!(page.status, 200);
    assert_security_headers(&page);
    let html = page.text();
    assert!(html.contains("<label for=\"secret\">"), "{html}");
    assert!(html.contains("name=\"viewport\""));
    assert!(!html.contains("style=\"") && !html.contains("<script>"));

    let response = post_secret(&gw, ADMIN_SECRET).await;
    assert_eq!(response.status, 303);
    assert_security_headers(&response);
    let set = response.header("set-cookie").unwrap();
    let attributes: Vec<&str> = set.split(';').map(str::trim).collect();
    let (name, value) = attributes[0].split_once('=').unwrap();
    assert_eq!(name, "tollgate_ui");
    assert_eq!(value.len(), 43, "256 random bits, base64url");
    assert!(!set.contains(ADMIN_SECRET));
    assert_eq!(
        &attributes[1..],
        ["HttpOnly", "SameSite=Strict", "Path=/ui"]
    );

    // The cookie opens the pages; the overview lists both APIs.
    let cookie = format!("{name}={value}");
    let overview = ui_get(&gw, &cookie, "/ui/").await;
    assert_eq!(overview.status, 200);
    assert_security_headers(&overview);
    let html = overview.text();
    assert!(html.contains("data-api=\"movies\"") && html.contains("data-api=\"open\""));
    // Signed in, the sign-in page sends to the overview.
    let again = ui_get(&gw, &cookie, "/ui/login").await;
    assert_eq!(again.status, 303);
    assert_eq!(again.header("location"), Some("/ui/"));
}

#[tokio::test]
async fn a_wrong_secret_is_refused_and_failures_are_throttled() {
    let (gw, _up) = gateway("").await;
    for _ in 0..5 {
        let response = post_secret(&gw, "wrong-secret-0123456789").await;
        assert_eq!(response.status, 401);
        assert!(response.header("set-cookie").is_none());
        assert!(response.text().contains("That is not the admin secret."));
    }
    // Now even the right secret waits: the throttle is checked before the secret.
    let response = post_secret(&gw, ADMIN_SECRET).await;
    assert_eq!(response.status, 429);
    assert!(response.header("retry-after").is_some());
    assert!(response.header("set-cookie").is_none());
    // A missing field and a huge one are plain failures, not errors.
    let gw2 = gateway("").await.0;
    let huge = "x".repeat(5000);
    for form in [vec![], vec![("secret", huge.as_str())]] {
        let response = ui(&gw2, "POST", "/ui/login", None, Some(&form), &[]).await;
        assert_eq!(response.status, 401);
    }
    // A form larger than the bound is refused before it is parsed.
    let big = "y".repeat(70 * 1024);
    let response = post_secret(&gw2, &big).await;
    assert_eq!(response.status, 413);
}

#[tokio::test]
async fn signed_out_pages_redirect_to_sign_in() {
    let (gw, _up) = gateway("").await;
    let cookie = sign_in(&gw).await;
    for path in [
        "/ui/",
        "/ui/apis",
        "/ui/clients",
        "/ui/sessions",
        "/ui/policies",
        "/ui/policies/edit?id=x",
    ] {
        for cookie in [None, Some("tollgate_ui=forged-session-id"), Some("other=1")] {
            let response = ui(&gw, "GET", path, cookie, None, &[]).await;
            assert_eq!(response.status, 303, "{path}");
            assert_eq!(response.header("location"), Some("/ui/login"), "{path}");
        }
    }
    // A change without a session does nothing and also lands on sign-in.
    let response = ui(
        &gw,
        "POST",
        "/ui/policies/save",
        None,
        Some(&[("id", "p1"), ("access", "")]),
        &[],
    )
    .await;
    assert_eq!(response.status, 303);
    assert_eq!(response.header("location"), Some("/ui/login"));
    assert_eq!(gw.admin_get("/policies/p1").await.status, 404);
    // `/ui` itself goes to `/ui/`; the static files need no session.
    assert_eq!(
        ui(&gw, "GET", "/ui", None, None, &[])
            .await
            .header("location"),
        Some("/ui/")
    );
    let css = ui(&gw, "GET", "/ui/static/ui.css", None, None, &[]).await;
    assert_eq!(css.status, 200);
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    assert_eq!(css.header("x-content-type-options"), Some("nosniff"));

    // Sign-out ends the session on the server: the old cookie no longer opens anything.
    let overview = ui_get(&gw, &cookie, "/ui/").await;
    let token = csrf(&overview.text());
    let out = ui_post(
        &gw,
        &cookie,
        "/ui/logout",
        &[("csrf_token", token.as_str())],
    )
    .await;
    assert_eq!(out.status, 303);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    let after = ui_get(&gw, &cookie, "/ui/").await;
    assert_eq!(after.status, 303);
}

#[tokio::test]
async fn changes_without_the_sessions_csrf_token_or_from_another_site_are_refused() {
    let (gw, _up) = gateway("").await;
    let cookie = sign_in(&gw).await;
    let other = sign_in(&gw).await;
    let page = ui_get(&gw, &cookie, "/ui/policies").await;
    let token = csrf(&page.text());
    let other_token = csrf(&ui_get(&gw, &other, "/ui/policies").await.text());
    assert_ne!(token, other_token);
    let policy = |t: &'static str| {
        vec![
            ("id", "p1"),
            ("rate", "5"),
            ("per", "1s"),
            ("csrf_token", t),
        ]
    };
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    for (form, headers) in [
        // No token, an empty one, another session's, one a character short.
        (vec![("id", "p1"), ("rate", "5"), ("per", "1s")], vec![]),
        (policy(""), vec![]),
        (policy(leak(other_token.clone())), vec![]),
        (policy(leak(token[..token.len() - 1].to_owned())), vec![]),
        // The right token, but the browser says the form came from another site.
        (
            policy(leak(token.clone())),
            vec![("origin", "http://evil.example")],
        ),
        (
            policy(leak(token.clone())),
            vec![("sec-fetch-site", "cross-site")],
        ),
    ] {
        let response = ui(
            &gw,
            "POST",
            "/ui/policies/save",
            Some(&cookie),
            Some(&form),
            &headers,
        )
        .await;
        assert_eq!(response.status, 403, "{form:?} {headers:?}");
        assert_security_headers(&response);
    }
    assert_eq!(
        gw.admin_get("/policies/p1").await.status,
        404,
        "nothing was created"
    );
    // The session's own token, same origin: created.
    let origin = format!("http://{}", gw.admin);
    let response = ui(
        &gw,
        "POST",
        "/ui/policies/save",
        Some(&cookie),
        Some(&policy(leak(token.clone()))),
        &[
            ("origin", origin.as_str()),
            ("sec-fetch-site", "same-origin"),
        ],
    )
    .await;
    assert_eq!(response.status, 303, "{}", response.text());
    assert_eq!(
        response.header("location"),
        Some("/ui/policies?done=created")
    );
    let stored = gw.admin_get("/policies/p1").await.json();
    assert_eq!(stored["rate_limit"]["rate"], 5);
    // Other methods than GET and POST are not served.
    let put = ui(&gw, "PUT", "/ui/policies", Some(&cookie), None, &[]).await;
    assert_eq!(put.status, 405);
    assert_eq!(put.header("allow"), Some("GET, POST"));
}

#[tokio::test]
async fn a_session_ends_after_its_idle_timeout() {
    // The smallest timeout the config accepts; the unit tests of ui::session cover the clock exactly
    // (injected time), this checks the configured value reaches the running UI.
    let (gw, _up) = gateway("").await;
    let cookie = sign_in(&gw).await;
    assert_eq!(ui_get(&gw, &cookie, "/ui/").await.status, 200);
    drop(gw);
    let (gw, _up) = {
        let upstream = Upstream::start().await;
        let config = ConfigDir::new("");
        let yaml = std::fs::read_to_string(config.gateway_yaml())
            .unwrap()
            .replace(
                &format!("secret: {ADMIN_SECRET} }}"),
                &format!("secret: {ADMIN_SECRET}, ui_idle_timeout: 1s }}"),
            );
        config.write("gateway.yaml", &yaml);
        config.api("open", &open_api("/open/", &upstream.url()));
        (TestGateway::start(config).await, upstream)
    };
    let cookie = sign_in(&gw).await;
    assert_eq!(ui_get(&gw, &cookie, "/ui/").await.status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let response = ui_get(&gw, &cookie, "/ui/").await;
    assert_eq!(response.status, 303);
    assert_eq!(response.header("location"), Some("/ui/login"));
}

#[tokio::test]
async fn the_ui_creates_rotates_and_deletes_clients_through_the_admin_api() {
    let (gw, _up) = gateway("").await;
    let cookie = sign_in(&gw).await;
    let page = ui_get(&gw, &cookie, "/ui/clients?api=movies").await;
    assert_eq!(page.status, 200);
    let token = csrf(&page.text());
    let created = ui_post(
        &gw,
        &cookie,
        "/ui/clients/create",
        &[
            ("csrf_token", token.as_str()),
            ("api", "movies"),
            ("client_id", "ui-app"),
            ("grant_types.client_credentials", "true"),
            ("scopes", "read"),
        ],
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.text());
    let secret = output(&created.text());
    assert_eq!(secret.len(), 43);
    let token_response = grant(&gw, "ui-app", &secret).await;
    assert_eq!(token_response.status, 200);
    // Shown once: the list does not show it again.
    let list = ui_get(&gw, &cookie, "/ui/clients?api=movies").await;
    assert!(list.text().contains("data-client=\"ui-app\""));
    assert!(!list.text().contains(&secret));

    // Bad input: the admin API's message, naming the field, on the page, with its status.
    let bad = ui_post(
        &gw,
        &cookie,
        "/ui/clients/create",
        &[
            ("csrf_token", token.as_str()),
            ("api", "movies"),
            ("grant_types.client_credentials", "true"),
            ("scopes", "telepathy"),
        ],
    )
    .await;
    assert_eq!(bad.status, 400);
    assert!(
        bad.text()
            .contains("scopes[0]: scope `telepathy` is not in oauth.scopes"),
        "{}",
        bad.text()
    );
    let unknown = ui_post(
        &gw,
        &cookie,
        "/ui/clients/create",
        &[
            ("csrf_token", token.as_str()),
            ("api", "no<such>api"),
            ("grant_types.client_credentials", "true"),
        ],
    )
    .await;
    assert_eq!(unknown.status, 404);
    assert!(
        unknown
            .text()
            .contains("no API with id `no&lt;such&gt;api`"),
        "{}",
        unknown.text()
    );

    // The buttons of the client's row post these.
    let ui_app = [
        ("csrf_token", token.as_str()),
        ("api", "movies"),
        ("client_id", "ui-app"),
    ];
    let rotated = ui_post(&gw, &cookie, "/ui/clients/rotate", &ui_app).await;
    assert_eq!(rotated.status, 200);
    let new_secret = output(&rotated.text());
    assert_ne!(new_secret, secret);
    let old = grant(&gw, "ui-app", &secret).await;
    assert_eq!(old.status, 401);

    let deleted = ui_post(&gw, &cookie, "/ui/clients/delete", &ui_app).await;
    assert_eq!(deleted.status, 303);
    assert_eq!(
        deleted.header("location"),
        Some("/ui/clients?api=movies&done=deleted")
    );
    assert_eq!(
        gw.admin_get("/apis/movies/clients/ui-app").await.status,
        404
    );
}

/// A change the admin API refuses is shown on the page the form was on, with the API's status and
/// message and the list's fields kept; one it makes goes back to that list with a notice.
#[tokio::test]
async fn changes_answer_on_the_page_they_came_from() {
    let (gw, _up) = gateway("").await;
    let cookie = sign_in(&gw).await;
    let token = csrf(&ui_get(&gw, &cookie, "/ui/sessions").await.text());
    let list = [
        ("csrf_token", token.as_str()),
        ("api", "movies"),
        ("client", "some-client"),
        ("user", "alice"),
    ];
    let mut unknown = list.to_vec();
    unknown.push(("sid", "nope"));
    let refused = ui_post(&gw, &cookie, "/ui/sessions/revoke", &unknown).await;
    assert_eq!(refused.status, 404, "{}", refused.text());
    let html = refused.text();
    assert!(html.contains("no session `nope`"), "{html}");
    assert!(html.contains("value=\"some-client\""), "{html}");
    assert!(html.contains("value=\"alice\""), "{html}");

    let revoked = ui_post(&gw, &cookie, "/ui/sessions/revoke-client", &list).await;
    assert_eq!(revoked.status, 303, "{}", revoked.text());
    assert_eq!(
        revoked.header("location"),
        Some("/ui/sessions?api=movies&client=some-client&user=alice&done=revoked-client")
    );

    let gone = ui_post(
        &gw,
        &cookie,
        "/ui/policies/delete",
        &[("csrf_token", token.as_str()), ("id", "nope")],
    )
    .await;
    assert_eq!(gone.status, 404, "{}", gone.text());
    assert!(gone.text().contains("New policy"), "{}", gone.text());
}

/// A client_credentials grant at movies with this client's secret.
async fn grant(gw: &TestGateway, client_id: &str, secret: &str) -> TestResponse {
    post_form(
        &gw.url("/movies/oauth/token"),
        Some(&basic(client_id, secret)),
        &[("grant_type", "client_credentials")],
    )
    .await
}

/// The name and value of the checkbox labelled `label` on a page: what a browser sends when it is ticked.
fn checkbox(html: &str, label: &str) -> (String, String) {
    let end = html
        .find(&format!("> {label}</label>"))
        .unwrap_or_else(|| panic!("a checkbox labelled {label}: {html}"));
    let input = &html[html[..end].rfind("<input").unwrap()..end];
    assert!(input.contains("type=\"checkbox\""), "{input}");
    let attr = |name: &str| {
        let start = input.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
        let len = input[start..].find('"').unwrap();
        html_unescape(&input[start..start + len])
    };
    (attr("name"), attr("value"))
}

/// The UI reads a form as a browser sends it, a group of ticked checkboxes included, and nothing
/// else: a body of another content type, a field sent twice, a body over the bound are answered with
/// the UI's error page, and nothing changes.
#[tokio::test]
async fn the_ui_takes_browser_forms_and_refuses_other_bodies() {
    let (gw, _up) = gateway("").await;
    let cookie = sign_in(&gw).await;
    let page = ui_get(&gw, &cookie, "/ui/clients?api=movies").await.text();
    let token = csrf(&page);
    let (cc_name, cc_value) = checkbox(&page, "client_credentials");
    let (rt_name, rt_value) = checkbox(&page, "refresh_token");
    let origin = format!("http://{}", gw.admin);
    let created = ui(
        &gw,
        "POST",
        "/ui/clients/create",
        Some(&cookie),
        Some(&[
            ("csrf_token", token.as_str()),
            ("api", "movies"),
            ("client_id", "two-grants"),
            (cc_name.as_str(), cc_value.as_str()),
            (rt_name.as_str(), rt_value.as_str()),
            ("redirect_uris", ""),
            ("scopes", "read"),
            ("policy", ""),
        ]),
        &[
            ("origin", origin.as_str()),
            ("sec-fetch-site", "same-origin"),
        ],
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.text());
    let stored = gw.admin_get("/apis/movies/clients/two-grants").await.json();
    assert_eq!(
        stored["grant_types"],
        serde_json::json!(["client_credentials", "refresh_token"]),
        "both ticked boxes reached the admin API"
    );

    let policy = format!("csrf_token={token}&id=p1&rate=5&per=1s");
    let big = format!("{policy}&description={}", "y".repeat(70 * 1024));
    for (content_type, body, status, says) in [
        (
            "text/plain",
            policy.clone(),
            415,
            "application/x-www-form-urlencoded",
        ),
        (
            "application/json",
            policy.clone(),
            415,
            "application/x-www-form-urlencoded",
        ),
        (
            "application/x-www-form-urlencoded",
            format!("{policy}&id=p2"),
            400,
            "the id parameter is repeated",
        ),
        (
            "application/x-www-form-urlencoded",
            format!("{policy}&csrf_token={token}"),
            400,
            "the csrf_token parameter is repeated",
        ),
        (
            "application/x-www-form-urlencoded",
            big,
            413,
            "exceeds the limit of 65536 bytes",
        ),
    ] {
        let response = post_raw(&gw, "/ui/policies/save", &cookie, content_type, body).await;
        let what = format!("{content_type} {status}");
        assert_eq!(response.status, status, "{what}: {}", response.text());
        assert_security_headers(&response);
        assert_eq!(
            response.header("content-type"),
            Some("text/html; charset=utf-8"),
            "{what}"
        );
        assert!(
            response.text().contains(says),
            "{what}: {}",
            response.text()
        );
    }
    for id in ["p1", "p2"] {
        assert_eq!(gw.admin_get(&format!("/policies/{id}")).await.status, 404);
    }
    // The sign-in form too: its secret in another content type does not sign in.
    let response = post_raw(
        &gw,
        "/ui/login",
        "",
        "text/plain",
        format!("secret={ADMIN_SECRET}"),
    )
    .await;
    assert_eq!(response.status, 415);
    assert!(response.header("set-cookie").is_none());
    // The same form, as a browser sends it: accepted.
    let response = post_raw(
        &gw,
        "/ui/policies/save",
        &cookie,
        "application/x-www-form-urlencoded",
        policy,
    )
    .await;
    assert_eq!(response.status, 303, "{}", response.text());
    assert_eq!(gw.admin_get("/policies/p1").await.status, 200);
}

/// The text of the page's `<output id="client-secret">`.
fn output(html: &str) -> String {
    let start = html
        .find("id=\"client-secret\"")
        .expect("a secret on the page");
    let rest = &html[start..];
    let open = rest.find('>').unwrap() + 1;
    let close = rest.find("</output>").unwrap();
    html_unescape(&rest[open..close])
}

#[tokio::test]
async fn stats_count_each_api_over_the_window() {
    let (gw, upstream) = gateway("").await;
    for _ in 0..3 {
        assert_eq!(get(&gw.url("/open/a")).await.status, 200);
    }
    assert_eq!(get(&gw.url("/movies/x")).await.status, 401);
    assert_eq!(get(&gw.url("/nowhere")).await.status, 404);
    assert_eq!(upstream.count(), 3);
    let stats = gw.admin_get("/stats?window=15m").await;
    assert_eq!(stats.status, 200);
    let body = stats.json();
    assert_eq!(body["window_secs"], 900);
    assert_eq!(body["slot_secs"], 10);
    let api = |id: &str| -> Value {
        body["apis"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["api"] == id)
            .cloned()
            .unwrap()
    };
    let open = api("open");
    assert_eq!(open["requests"], 3);
    assert_eq!(open["status_4xx"], 0);
    assert!(open["p50_ms"].as_f64().is_some());
    assert_eq!(open["series"].as_array().unwrap().len(), 90);
    let movies = api("movies");
    assert_eq!(
        (movies["requests"].clone(), movies["status_4xx"].clone()),
        (1.into(), 1.into())
    );
    assert_eq!(body["unrouted"]["requests"], 1);
    // The default window is 15 minutes; a shorter one has fewer slots.
    assert_eq!(gw.admin_get("/stats").await.json()["window_secs"], 900);
    let short = gw.admin_get("/stats?window=30s").await.json();
    assert_eq!(short["apis"][0]["series"].as_array().unwrap().len(), 3);

    // Bad windows and parameters: 400 in the admin API's error shape, naming the parameter.
    for (query, names) in [
        ("window=16m", "window"),
        ("window=0s", "window"),
        ("window=1h", "window"),
        ("window=abc", "window"),
        ("window=5m&window=5m", "window"),
        ("api=open", "api"),
    ] {
        let response = gw.admin_get(&format!("/stats?{query}")).await;
        assert_eq!(response.status, 400, "{query}");
        let error = response.json();
        assert_eq!(error["error"], "invalid_request");
        assert!(
            error["error_description"]
                .as_str()
                .unwrap()
                .starts_with(names),
            "{error}"
        );
    }
    // Like every admin route, it needs the admin secret.
    assert_eq!(get(&gw.admin_url("/stats")).await.status, 401);

    // The overview shows the same counts.
    let cookie = sign_in(&gw).await;
    let html = ui_get(&gw, &cookie, "/ui/").await.text();
    let section = &html[html.find("data-api=\"open\"").unwrap()..];
    assert!(
        section.contains("<dd data-stat=\"requests\">3</dd>"),
        "{section}"
    );
    assert!(html.contains("<svg"));
}

#[tokio::test]
async fn the_pages_render_for_a_signed_in_admin() {
    let (gw, _up) = gateway("").await;
    let cookie = sign_in(&gw).await;
    for (path, expect) in [
        ("/ui/apis", "Targets"),
        ("/ui/clients", "New client of movies"),
        ("/ui/sessions", "A client's sessions"),
        ("/ui/sessions?api=movies&client=nobody", "No live session."),
        ("/ui/policies", "New policy"),
    ] {
        let response = ui_get(&gw, &cookie, path).await;
        assert_eq!(response.status, 200, "{path}: {}", response.text());
        assert_security_headers(&response);
        assert!(
            response.text().contains(expect),
            "{path}: {}",
            response.text()
        );
    }
    // Unknown ids: the admin API's 404, shown on the page.
    let response = ui_get(&gw, &cookie, "/ui/sessions?sid=nope").await;
    assert_eq!(response.status, 404);
    assert!(response.text().contains("no session `nope`"));
    let response = ui_get(&gw, &cookie, "/ui/policies/edit?id=nope").await;
    assert_eq!(response.status, 404);
    assert_eq!(ui_get(&gw, &cookie, "/ui/nope").await.status, 404);
}

#[tokio::test]
async fn stats_count_limiter_refusals_per_api() {
    let upstream = Upstream::start().await;
    let config = ConfigDir::new("");
    config.api(
        "limited",
        &format!(
            "{}global_rate_limit: {{ rate: 2, per: 1h }}\n",
            open_api("/limited/", &upstream.url())
        ),
    );
    config.api("open", &open_api("/open/", &upstream.url()));
    let gw = TestGateway::start(config).await;
    let statuses: Vec<u16> = {
        let mut out = Vec::new();
        for _ in 0..5 {
            out.push(get(&gw.url("/limited/x")).await.status.as_u16());
        }
        out
    };
    assert_eq!(statuses, [200, 200, 429, 429, 429]);
    let body = gw.admin_get("/stats?window=1m").await.json();
    let limited = &body["apis"][0];
    assert_eq!(limited["api"], "limited");
    assert_eq!(limited["requests"], 5);
    assert_eq!(limited["refused"], 3);
    assert_eq!(limited["status_4xx"], 3);
    assert_eq!(body["apis"][1]["refused"], 0);
}
