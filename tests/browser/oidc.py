#!/usr/bin/env python3
"""The OpenID Connect login session in a real browser: headless Chromium (Debian's) driven by Playwright,
against a tollgate binary.

The user signs in once at the builtin login page for the application `first`; the gateway sets its
login-session cookie. A second authorization request of the same browser, for another application
(`second`), shows only the consent page: no password field. Allowing it brings a code whose ID token
names the same user with the same `auth_time`. After RP-initiated logout the password form is back.
Screenshots of each page go to target/screenshots/.

usage: oidc.py PATH_TO_TOLLGATE_BINARY
"""

import base64
import hashlib
import http.server
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

from playwright.sync_api import sync_playwright

import harness
from harness import CHROMIUM, FLAGS, ROOT, free_port, hash_secret

SCREENSHOTS = os.path.join(ROOT, "target", "screenshots")
PASSWORD = "browser-alice-password"


def check(condition, detail):
    harness.check(condition, detail, "browser OIDC check")


def serve_callback(port):
    """The applications' redirect URIs: a page that shows what came back."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
            body = (
                "<!doctype html><html><head><meta charset='utf-8'><title>callback</title></head><body>"
                f"<h1>Back at the application</h1><pre id='query'>{json.dumps(query)}</pre></body></html>"
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def start_gateway(binary, folder, callback):
    port, admin = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    with open(os.path.join(folder, "gateway.yaml"), "w") as f:
        f.write(
            f"listen: 127.0.0.1:{port}\npublic_url: {base}\nusers: users.yaml\n"
            f"admin: {{ listen: 127.0.0.1:{admin}, secret: browser-admin-secret-0123 }}\n"
            "signing: { key_file: keys/signing.pem, generate: true }\nlog: { level: warn }\n"
        )
    with open(os.path.join(folder, "users.yaml"), "w") as f:
        f.write(
            f'- username: alice\n  password_hash: "{hash_secret(binary, PASSWORD)}"\n'
            "  scopes: [read]\n  claims: { email: alice@example.com, name: Alice Liddell }\n"
        )
    os.makedirs(os.path.join(folder, "api-definitions"))
    with open(os.path.join(folder, "api-definitions", "movies.yaml"), "w") as f:
        f.write(
            f"""name: Movies
listen_path: /movies/
upstream:
  mock: {{ status: 200, body: 'ok' }}
oauth:
  openid: true
  grant_types: [authorization_code]
  scopes: [read]
  clients:
    - client_id: first
      redirect_uris: ["{callback}/first"]
      post_logout_redirect_uris: ["{callback}/bye"]
      grant_types: [authorization_code]
      scopes: [openid, profile, email]
    - client_id: second
      redirect_uris: ["{callback}/second"]
      grant_types: [authorization_code]
      scopes: [openid, profile, email]
"""
        )
    proc = subprocess.Popen([binary, "run", "--config", os.path.join(folder, "gateway.yaml")])
    for _ in range(200):
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=1) as r:
                if r.status == 200:
                    return proc, base
        except OSError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("tollgate did not start")


def authorize_url(base, client, callback, verifier):
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = urllib.parse.urlencode({
        "response_type": "code", "client_id": client, "redirect_uri": f"{callback}/{client}",
        "scope": "openid profile email", "state": f"st-{client}", "nonce": secrets.token_urlsafe(16),
        "code_challenge": challenge, "code_challenge_method": "S256",
    })
    return f"{base}/movies/oauth/authorize?{query}"


def id_token_claims(base, client, callback, code, verifier):
    """The code exchange (a public client), outside the browser as an application back end does it."""
    data = urllib.parse.urlencode({
        "grant_type": "authorization_code", "code": code, "redirect_uri": f"{callback}/{client}",
        "code_verifier": verifier, "client_id": client,
    }).encode()
    with urllib.request.urlopen(urllib.request.Request(f"{base}/movies/oauth/token", data=data), timeout=5) as r:
        body = json.load(r)
    payload = body["id_token"].split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def shot(page, name):
    os.makedirs(SCREENSHOTS, exist_ok=True)
    page.screenshot(path=os.path.join(SCREENSHOTS, f"oidc-{name}.png"), full_page=True)


def returned(page):
    return json.loads(page.inner_text("#query"))


def main():
    binary = sys.argv[1]
    cb_port = free_port()
    callback = f"http://127.0.0.1:{cb_port}"
    with tempfile.TemporaryDirectory() as folder:
        proc, base = start_gateway(binary, folder, callback)
        server = serve_callback(cb_port)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
                try:
                    context = browser.new_context()
                    page = context.new_page()
                    # 1. The first application: the password form.
                    v1 = secrets.token_urlsafe(40)
                    page.goto(authorize_url(base, "first", callback, v1), timeout=15000)
                    check(page.locator("input[type=password]").count() == 1, "no password form at first")
                    shot(page, "1-login")
                    page.fill("#username", "alice")
                    page.fill("#password", PASSWORD)
                    page.click("button.allow")
                    page.wait_for_url(f"{callback}/first*", timeout=15000)
                    first = returned(page)
                    check(first.get("state") == ["st-first"] and "code" in first, first)
                    shot(page, "2-first-app")
                    cookies = [c for c in context.cookies() if c["name"] == "tg_login_movies"]
                    check(len(cookies) == 1 and cookies[0]["httpOnly"] and cookies[0]["sameSite"] == "Lax",
                          ("the login-session cookie", context.cookies()))
                    first_claims = id_token_claims(base, "first", callback, first["code"][0], v1)
                    print("ok  signed in once at the password form")

                    # 2. Another application, same browser: consent only, no password field.
                    v2 = secrets.token_urlsafe(40)
                    page.goto(authorize_url(base, "second", callback, v2), timeout=15000)
                    check(page.locator("input[type=password]").count() == 0, "the password form came back")
                    check(page.inner_text("#signed-in-user") == "alice", page.content())
                    shot(page, "3-second-app-consent")
                    page.click("button.allow")
                    page.wait_for_url(f"{callback}/second*", timeout=15000)
                    second = returned(page)
                    check(second.get("state") == ["st-second"] and "code" in second, second)
                    shot(page, "4-second-app")
                    second_claims = id_token_claims(base, "second", callback, second["code"][0], v2)
                    check(second_claims["sub"] == "alice" and second_claims["aud"] == "second", second_claims)
                    check(second_claims["auth_time"] == first_claims["auth_time"], (first_claims, second_claims))
                    print("ok  a second authorize for another client skipped the password form")

                    # 3. RP-initiated logout, then the password form is back.
                    page.goto(f"{base}/movies/oauth/logout?" + urllib.parse.urlencode(
                        {"client_id": "first", "post_logout_redirect_uri": f"{callback}/bye", "state": "out"}),
                        timeout=15000)
                    check(page.url.startswith(f"{callback}/bye"), page.url)
                    page.goto(authorize_url(base, "second", callback, secrets.token_urlsafe(40)), timeout=15000)
                    check(page.locator("input[type=password]").count() == 1, "still signed in after logout")
                    shot(page, "5-after-logout")
                    print("ok  after logout the password form is back")
                finally:
                    browser.close()
        finally:
            proc.terminate()
            proc.wait(timeout=15)
            server.shutdown()
    print(f"screenshots in {SCREENSHOTS}")


if __name__ == "__main__":
    main()
