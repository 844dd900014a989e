#!/usr/bin/env python3
"""CORS in a real browser: headless Chromium (Debian's) driven by Playwright, against a tollgate binary.

A page served from the allowed origin gets a token from the API's token endpoint and calls the API with
it through the gateway: both succeed (each after a preflight, because of the Authorization header). The
same page served from another origin is blocked by the browser at both steps, although it holds a valid
token. Screenshots of both pages go to target/screenshots/.

usage: cors.py PATH_TO_TOLLGATE_BINARY
"""

import base64
import http.server
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from playwright.sync_api import sync_playwright

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
SCREENSHOTS = os.path.join(ROOT, "target", "screenshots")
SECRET = "browser-spa-secret-0123"
# The browser cannot download a build of its own here: Debian's chromium, with everything that would
# reach the network off.
CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>tollgate CORS</title></head>
<body>
<h1>Page on <span id="origin"></span></h1>
<pre id="result">running...</pre>
<script>
const GATEWAY = "%(gateway)s";
const TOKEN = decodeURIComponent(location.hash.slice(1));
async function step(name, out, call) {
  try { out[name] = await call(); } catch (e) { out[name] = {blocked: String(e)}; }
}
(async () => {
  document.getElementById("origin").textContent = location.origin;
  const out = {};
  // 1. The API's token endpoint, as a browser app would call it.
  await step("token", out, async () => {
    const r = await fetch(GATEWAY + "/shop/oauth/token", {
      method: "POST",
      headers: {"Authorization": "Basic %(basic)s",
                "Content-Type": "application/x-www-form-urlencoded"},
      body: "grant_type=client_credentials&scope=read",
    });
    const body = await r.json();
    return {status: r.status, token_type: body.token_type};
  });
  // 2. The API itself, with a valid token.
  await step("api", out, async () => {
    const r = await fetch(GATEWAY + "/shop/items", {headers: {"Authorization": "Bearer " + TOKEN}});
    return {status: r.status, body: await r.json(),
            remaining: r.headers.get("X-RateLimit-Remaining")};
  });
  document.getElementById("result").textContent = JSON.stringify(out, null, 2);
  window.result = out;
})();
</script>
</body></html>
"""


def check(condition, detail):
    """Like assert, but never compiled away (python -O drops assert statements)."""
    if not condition:
        raise SystemExit(f"browser CORS check failed: {detail}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hash_secret(binary, secret):
    out = subprocess.run([binary, "hash-secret"], input=secret.encode(), capture_output=True, check=True)
    return out.stdout.decode().strip()


def serve_page(html, port):
    """A static page on its own port: its own origin."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = html.encode()
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


def start_gateway(binary, folder, allowed_origin):
    port, admin = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    with open(os.path.join(folder, "gateway.yaml"), "w") as f:
        f.write(
            f"listen: 127.0.0.1:{port}\npublic_url: {base}\n"
            f"admin: {{ listen: 127.0.0.1:{admin}, secret: browser-admin-secret-0123 }}\n"
            "signing: { key_file: keys/signing.pem, generate: true }\nlog: { level: warn }\n"
        )
    os.makedirs(os.path.join(folder, "api-definitions"))
    with open(os.path.join(folder, "api-definitions", "shop.yaml"), "w") as f:
        f.write(
            f"""listen_path: /shop/
upstream:
  mock: {{ status: 200, headers: {{ content-type: application/json }}, body: '{{"items":["tea"]}}' }}
rate_limit: {{ rate: 100, per: 1s }}
oauth:
  grant_types: [client_credentials]
  scopes: [read]
  clients:
    - client_id: spa
      secret_hash: "{hash_secret(binary, SECRET)}"
      grant_types: [client_credentials]
      scopes: [read]
cors:
  allowed_origins: ["{allowed_origin}"]
  allowed_methods: [GET, POST]
  allowed_headers: [Authorization, Content-Type]
  exposed_headers: [X-RateLimit-Remaining]
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


def token(base):
    """A token got outside the browser: the blocked page holds a valid one too."""
    req = urllib.request.Request(
        f"{base}/shop/oauth/token",
        data=b"grant_type=client_credentials&scope=read",
        headers={"Authorization": "Basic " + base64.b64encode(f"spa:{SECRET}".encode()).decode()},
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)["access_token"]


def visit(browser, page_url, name):
    page = browser.new_page()
    try:
        page.goto(page_url, timeout=15000)
        page.wait_for_function("window.result !== undefined", timeout=15000)
        result = page.evaluate("window.result")
        os.makedirs(SCREENSHOTS, exist_ok=True)
        page.screenshot(path=os.path.join(SCREENSHOTS, f"cors-{name}.png"))
        return result
    finally:
        page.close()


def main():
    binary = sys.argv[1]
    basic = base64.b64encode(f"spa:{SECRET}".encode()).decode()
    # Two ports, two origins: the first is the one the API allows.
    allowed_port, other_port = free_port(), free_port()
    allowed, other = f"http://127.0.0.1:{allowed_port}", f"http://127.0.0.1:{other_port}"
    with tempfile.TemporaryDirectory() as folder:
        proc, base = start_gateway(binary, folder, allowed)
        html = PAGE % {"gateway": base, "basic": basic}
        servers = [serve_page(html, allowed_port), serve_page(html, other_port)]
        try:
            access_token = token(base)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
                try:
                    ok = visit(browser, f"{allowed}/#{access_token}", "allowed")
                    print("allowed origin:", json.dumps(ok))
                    check(ok["token"].get("status") == 200, ok)
                    check(ok["token"].get("token_type") == "bearer", ok)
                    check(ok["api"].get("status") == 200, ok)
                    check(ok["api"].get("body") == {"items": ["tea"]}, ok)
                    check(ok["api"].get("remaining") is not None, ("exposed header unreadable", ok))
                    print("ok  allowed origin: token endpoint and API readable from the page")

                    blocked = visit(browser, f"{other}/#{access_token}", "blocked")
                    print("other origin:", json.dumps(blocked))
                    check("blocked" in blocked["token"], blocked)
                    check("blocked" in blocked["api"], blocked)
                    print("ok  other origin: the browser blocked both calls")
                finally:
                    browser.close()
        finally:
            proc.terminate()
            proc.wait(timeout=15)
            for server in servers:
                server.shutdown()
    print(f"screenshots in {SCREENSHOTS}")


if __name__ == "__main__":
    main()
