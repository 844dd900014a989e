#!/usr/bin/env python3
"""CORS in a real browser: headless Chromium (Debian's) driven by Playwright, against a tollgate binary.

A page served from the allowed origin gets a token from the API's token endpoint and calls the API with
it through the gateway: both succeed (each after a preflight, because of the Authorization header). The
same page served from another origin is blocked by the browser at both steps, although it holds a valid
token. Screenshots of both pages go to target/screenshots/.

usage: cors.py PATH_TO_TOLLGATE_BINARY
"""

import base64
import json
import os
import sys
import tempfile
import urllib.request

from playwright.sync_api import sync_playwright

from harness import ROOT, check as _check, free_port, hash_secret, launch, serve_page, start_tollgate, stop

SCREENSHOTS = os.path.join(ROOT, "target", "screenshots")
SECRET = "browser-spa-secret-0123"

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
  window.corsResult = out;
})();
</script>
</body></html>
"""


def check(condition, detail):
    _check(condition, detail, "browser CORS check")


def start_gateway(binary, folder, allowed_origin):
    port, admin = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    gateway_yaml = (
        f"listen: 127.0.0.1:{port}\npublic_url: {base}\n"
        f"admin: {{ listen: 127.0.0.1:{admin}, secret: browser-admin-secret-0123 }}\n"
        "signing: { key_file: keys/signing.pem, generate: true }\nlog: { level: warn }\n"
    )
    shop = f"""listen_path: /shop/
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
    proc = start_tollgate(binary, folder, gateway_yaml, {"shop": shop}, f"{base}/health")
    return proc, base


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
        # Not `window.result`: the page's `<pre id="result">` is a named property of `window`, so that
        # name is defined (as the element) before the script has finished its two calls.
        page.wait_for_function("window.corsResult !== undefined", timeout=15000)
        result = page.evaluate("window.corsResult")
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
                browser = launch(p)
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
            stop(proc)
            for server in servers:
                server.shutdown()
    print(f"screenshots in {SCREENSHOTS}")


if __name__ == "__main__":
    main()
