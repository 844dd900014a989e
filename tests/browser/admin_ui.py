#!/usr/bin/env python3
"""The admin web UI in a real browser: headless Chromium (Debian's) driven by Playwright, against a
tollgate binary with two sample APIs on a real upstream.

Signed out, a page redirects to sign-in; signing in shows both APIs, whose request counts grow with
traffic; a client is created (its secret shown once), used, rotated (the old secret stops working); a
session of it is revoked (its access token then gets 401 at the proxy); a policy is created and edited;
a POST without the CSRF token and a forged form from another origin are refused and change nothing;
sign-out ends the session. A screenshot of each page goes to target/ui-screenshots/.

usage: admin_ui.py PATH_TO_TOLLGATE_BINARY
"""

import base64
import http.server
import json
import os
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request

from playwright.sync_api import sync_playwright

from harness import ROOT, check as _check, free_port, hash_secret, launch, serve, serve_page, start_tollgate, stop

SCREENSHOTS = os.path.join(ROOT, "target", "ui-screenshots")
ADMIN_SECRET = "browser-admin-ui-secret-0123"
ALICE_PASSWORD = "alice-password"


def check(condition, detail):
    _check(condition, detail, "admin UI browser check")


class Upstream(http.server.BaseHTTPRequestHandler):
    """The real upstream both APIs forward to: answers every GET with JSON naming the path."""

    def do_GET(self):
        body = json.dumps({"path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def request(url, data=None, headers=None):
    """(status, parsed JSON or text) of a plain HTTP request, errors included."""
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode(errors="replace")


def token_request(base, client_id, secret, form):
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return request(
        f"{base}/movies/oauth/token",
        data=urllib.parse.urlencode(form).encode(),
        headers={"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"},
    )


def admin_api(admin, path):
    return request(f"{admin}{path}", headers={"Authorization": f"Bearer {ADMIN_SECRET}"})


def shot(page, name):
    os.makedirs(SCREENSHOTS, exist_ok=True)
    page.screenshot(path=os.path.join(SCREENSHOTS, f"{name}.png"), full_page=True)


def stat(page, api, name):
    return page.locator(f'section[data-api="{api}"] dd[data-stat="{name}"]').inner_text()


def config(binary, folder, upstream):
    port, admin_port = free_port(), free_port()
    base, admin = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}"
    with open(os.path.join(folder, "users.yaml"), "w") as f:
        f.write(
            f'- username: alice\n  password_hash: "{hash_secret(binary, ALICE_PASSWORD)}"\n'
            "  scopes: [read, write]\n"
        )
    gateway_yaml = (
        f"listen: 127.0.0.1:{port}\npublic_url: {base}\nusers: users.yaml\n"
        f"admin: {{ listen: 127.0.0.1:{admin_port}, secret: {ADMIN_SECRET} }}\n"
        "signing: { key_file: keys/signing.pem, generate: true }\nlog: { level: warn }\n"
    )
    # Like the sample gateway's two APIs (api-definitions/), on a real upstream.
    apis = {
        "hello": f"""name: Hello API
listen_path: /hello/
strip_listen_path: true
upstream: {{ url: "{upstream}" }}
auth: {{ type: none }}
""",
        "movies": f"""name: Movies API
listen_path: /movies/
upstream: {{ url: "{upstream}" }}
auth:
  type: oauth2
  required_scopes: [read]
oauth:
  grant_types: [client_credentials, password, refresh_token]
  access_token: {{ ttl: 30m }}
  scopes: [read, write]
rate_limit: {{ rate: 1000, per: 1s }}
""",
    }
    proc = start_tollgate(binary, folder, gateway_yaml, apis, f"{admin}/ui/login")
    return proc, base, admin


def run(browser, base, admin, forged_port):
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    # Deletes and revocations ask for confirmation (ui.js); the test says yes.
    page.on("dialog", lambda dialog: dialog.accept())

    # Signed out: any page leads to sign-in.
    page.goto(f"{admin}/ui/clients")
    check(page.url == f"{admin}/ui/login", page.url)
    shot(page, "sign-in")
    page.get_by_label("Admin secret").fill("not-the-secret-at-all")
    page.get_by_role("button", name="Sign in").click()
    check("That is not the admin secret." in page.content(), ("a wrong secret is refused", page.url, page.content()))
    page.get_by_label("Admin secret").fill(ADMIN_SECRET)
    page.get_by_role("button", name="Sign in").click()
    check(page.url == f"{admin}/ui/", page.url)
    cookie = [c for c in context.cookies() if c["name"] == "tollgate_ui"]
    check(len(cookie) == 1 and cookie[0]["httpOnly"] and cookie[0]["sameSite"] == "Strict", cookie)
    check(cookie[0]["path"] == "/ui", cookie)
    print("ok  sign-in: redirect when signed out, wrong secret refused, HttpOnly SameSite=Strict cookie")

    # Traffic: both APIs' counts grow.
    before = {api: int(stat(page, api, "requests")) for api in ("hello", "movies")}
    for i in range(5):
        status, _ = request(f"{base}/hello/{i}")
        check(status == 200, status)
    status, body = token_request(base, "x", "y", {"grant_type": "client_credentials"})
    check(status == 401, (status, body))
    status, _ = request(f"{base}/movies/list")
    check(status == 401, status)
    page.reload()
    after = {api: int(stat(page, api, "requests")) for api in ("hello", "movies")}
    check(after["hello"] == before["hello"] + 5, (before, after))
    check(after["movies"] == before["movies"] + 2, (before, after))
    check(int(stat(page, "movies", "status_4xx")) >= 2, "4xx counted")
    check(page.locator('section[data-api="hello"] svg[role="img"]').count() == 2, "two charts per API")
    shot(page, "overview")
    print(f"ok  overview: live counts {after} after traffic, charts drawn")

    page.get_by_role("link", name="APIs", exact=True).click()
    check(page.locator('section[data-api="movies"] td.up').count() == 1, "the movies target is healthy")
    shot(page, "apis")
    print("ok  APIs: definitions and a healthy target each")

    # A client: created with its secret shown once.
    page.get_by_role("link", name="Clients", exact=True).click()
    page.get_by_label("client_id").fill("web-app")
    page.get_by_label("password").check()
    page.get_by_label("refresh_token").check()
    page.get_by_label("Scopes").fill("read write")
    page.get_by_role("button", name="Create client").click()
    secret = page.locator("#client-secret").inner_text()
    check(len(secret) == 43, secret)
    shot(page, "client-created")
    page.goto(f"{admin}/ui/clients?api=movies")
    check(secret not in page.content(), "the secret is shown once only")
    check(page.locator('tr[data-client="web-app"]').count() == 1, "the new client is listed")
    shot(page, "clients")
    status, tokens = token_request(
        base, "web-app", secret, {"grant_type": "password", "username": "alice", "password": ALICE_PASSWORD, "scope": "read"}
    )
    check(status == 200 and "refresh_token" in tokens, (status, tokens))
    access = tokens["access_token"]
    status, _ = request(f"{base}/movies/list", headers={"Authorization": f"Bearer {access}"})
    check(status == 200, status)
    print("ok  clients: created, secret shown once, used for a password grant")

    page.get_by_role("button", name="Rotate the secret of web-app").click()
    new_secret = page.locator("#client-secret").inner_text()
    check(len(new_secret) == 43 and new_secret != secret, "a new secret")
    status, _ = token_request(base, "web-app", secret, {"grant_type": "client_credentials"})
    check(status == 401, ("the old secret still works", status))
    status, _ = token_request(base, "web-app", new_secret, {"grant_type": "client_credentials"})
    check(status == 200, ("the new secret does not work", status))
    shot(page, "client-rotated")
    print("ok  clients: rotated, the old secret refused, the new one works")

    # Sessions: alice's session with web-app, revoked; its access token is refused at the proxy.
    page.locator('tr[data-client="web-app"]').get_by_role("link", name="sessions").click()
    rows = page.locator("tr[data-sid]")
    check(rows.count() == 1, rows.count())
    check("alice" in rows.first.inner_text(), rows.first.inner_text())
    shot(page, "sessions")
    rows.first.get_by_role("button").click()
    check("Session revoked" in page.content(), "a notice after revoking")
    check(page.locator("tr[data-sid]").count() == 0, "no live session left")
    status, _ = request(f"{base}/movies/list", headers={"Authorization": f"Bearer {access}"})
    check(status == 401, ("the revoked session's token still passes", status))
    print("ok  sessions: revoked in the UI, its access token gets 401 at the proxy")

    # Policies: create, then edit.
    page.get_by_role("link", name="Policies", exact=True).click()
    page.get_by_label("id", exact=True).fill("silver")
    page.locator("#rate").fill("100")
    page.locator("#per").fill("1s")
    page.get_by_role("button", name="Create policy").click()
    check("Policy created." in page.content(), "created")
    page.get_by_role("link", name="Edit policy silver").click()
    page.locator("#rate").fill("50")
    page.locator("#quota_max").fill("1000")
    page.locator("#quota_period").fill("1d")
    shot(page, "policy-edit")
    page.get_by_role("button", name="Save policy").click()
    row = page.locator('tr[data-policy="silver"]').inner_text()
    check("50 per 1s" in row and "1000 per 1d" in row, row)
    status, policy = admin_api(admin, "/policies/silver")
    check(status == 200 and policy["rate_limit"]["rate"] == 50 and policy["quota"]["max"] == 1000, policy)
    shot(page, "policies")
    print("ok  policies: created and edited; the admin API sees the change")

    # A POST without the CSRF token (the field removed from the page's form): 403, nothing created.
    page.get_by_label("id", exact=True).fill("no-token")
    page.evaluate("document.querySelectorAll('form[action=\"/ui/policies/save\"] input[name=csrf_token]').forEach(e => e.remove())")
    with page.expect_response(f"{admin}/ui/policies/save") as answer:
        page.get_by_role("button", name="Create policy").click()
    check(answer.value.status == 403, answer.value.status)
    shot(page, "csrf-refused")
    status, _ = admin_api(admin, "/policies/no-token")
    check(status == 404, ("created without a CSRF token", status))
    # A form on another origin that posts to the UI at once, in the signed-in browser.
    forged = f"""<!doctype html><html><body>
<form id="f" method="post" action="{admin}/ui/policies/save">
<input name="id" value="forged"><input name="rate" value="1"><input name="per" value="1s">
</form><script>document.getElementById("f").submit();</script></body></html>"""
    server = serve_page(forged, forged_port)
    try:
        evil = context.new_page()
        with evil.expect_response(f"{admin}/ui/policies/save") as answer:
            evil.goto(f"http://localhost:{forged_port}/")
        # SameSite=Strict keeps the cookie off it (303 to sign-in); the Origin check would answer 403.
        check(answer.value.status in (303, 403), answer.value.status)
        evil.wait_for_load_state()
        shot(evil, "forged-post")
        evil.close()
    finally:
        server.shutdown()
    status, _ = admin_api(admin, "/policies/forged")
    check(status == 404, ("the forged cross-site POST created a policy", status))
    print("ok  CSRF: a POST without the token gets 403; a forged cross-site form changes nothing")

    # A phone-sized screen: the overview still fits.
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    phone.add_cookies(context.cookies())
    mobile = phone.new_page()
    mobile.goto(f"{admin}/ui/")
    width = mobile.evaluate("document.documentElement.scrollWidth")
    check(width <= 400, ("the overview is wider than a phone", width))
    shot(mobile, "overview-phone")
    phone.close()
    print("ok  phone: the overview fits 390 px")

    # Sign-out: the session ends; pages lead to sign-in again.
    page.goto(f"{admin}/ui/")
    page.get_by_role("button", name="Sign out").click()
    check(page.url == f"{admin}/ui/login", page.url)
    page.goto(f"{admin}/ui/policies")
    check(page.url == f"{admin}/ui/login", page.url)
    print("ok  sign-out: pages redirect to sign-in again")
    context.close()


def main():
    binary = sys.argv[1]
    upstream_port, forged_port = free_port(), free_port()
    upstream = serve(Upstream, upstream_port)
    with tempfile.TemporaryDirectory() as folder:
        proc, base, admin = config(binary, folder, f"http://127.0.0.1:{upstream_port}")
        try:
            with sync_playwright() as p:
                browser = launch(p)
                try:
                    run(browser, base, admin, forged_port)
                finally:
                    browser.close()
        finally:
            stop(proc)
            upstream.shutdown()
    print(f"screenshots in {SCREENSHOTS}")


if __name__ == "__main__":
    main()
