"""Shared by the interop scripts: a tollgate binary serving HTTPS (the test certificate) on free ports,
the login form filled as a browser would, and checks that fail with an exit status.

The generic parts (free ports, hashing a secret, starting the binary and waiting for it, `check`) are
tests/browser/harness.py's; this module adds what the off-the-shelf clients need: TLS their HTTP
libraries trust, users and an API written for them, and the gateway's exit status checked on the way
out.
"""

import contextlib
import html.parser
import importlib.util
import os
import ssl
import tempfile
import urllib.parse

import requests

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.normpath(os.path.join(HERE, "..", "fixtures"))
# The gateway serves HTTPS with the test certificate; clients trust it like any private CA.
CA = os.path.join(FIXTURES, "tls-cert.pem")
os.environ["REQUESTS_CA_BUNDLE"] = CA

# Loaded by path under a name of its own: both folders call their module harness.py.
_spec = importlib.util.spec_from_file_location(
    "browser_harness", os.path.join(HERE, "..", "browser", "harness.py")
)
_browser = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_browser)
free_port = _browser.free_port
hash_secret = _browser.hash_secret


def check(condition, detail):
    """Like assert, but never compiled away (python -O / PYTHONOPTIMIZE drop assert statements)."""
    _browser.check(condition, detail, "interop check")


class FormParser(html.parser.HTMLParser):
    """Collects the inputs of the first form, as a browser would submit them."""

    def __init__(self):
        super().__init__()
        self.action = None
        self.fields = {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and self.action is None:
            self.action = attrs.get("action")
        if tag == "input" and attrs.get("name") and attrs.get("type") in ("hidden", None, "text"):
            self.fields[attrs["name"]] = attrs.get("value", "")


def sign_in(url, password, username="alice"):
    """A user at a browser: loads the authorization URL, fills the login form, allows, and returns the
    redirect's Location (the client's callback is never called: nothing needs to listen there)."""
    browser = requests.Session()
    page = browser.get(url, timeout=5)
    check(page.status_code == 200, (page.status_code, page.text))
    form = FormParser()
    form.feed(page.text)
    fields = dict(form.fields)
    fields.update({"username": username, "password": password, "action": "allow"})
    action = urllib.parse.urljoin(page.url, form.action or page.url)
    answer = browser.post(action, data=fields, allow_redirects=False, timeout=5)
    check(answer.status_code == 303, (answer.status_code, answer.text))
    return answer.headers["Location"]


@contextlib.contextmanager
def gateway(binary, users_yaml, apis, signing="{ key_file: keys/signing.pem, generate: true }"):
    """Runs `binary` over HTTPS on free ports with users.yaml and api-definitions/<id>.yaml from
    `apis` ({id: yaml}); yields its base URL. On the way out it is stopped with SIGTERM, a graceful
    shutdown that must exit 0 (docs/design.md §1); a failure inside the block is reported first."""
    with tempfile.TemporaryDirectory() as folder:
        port, admin = free_port(), free_port()
        base = f"https://127.0.0.1:{port}"
        with open(os.path.join(folder, "users.yaml"), "w") as f:
            f.write(users_yaml)
        gateway_yaml = (
            f"listen: 127.0.0.1:{port}\npublic_url: {base}\nusers: users.yaml\n"
            f'tls: {{ cert: "{CA}", key: "{os.path.join(FIXTURES, "tls-key.pem")}" }}\n'
            f"admin: {{ listen: 127.0.0.1:{admin}, secret: interop-admin-secret-0123 }}\n"
            f"signing: {signing}\nlog: {{ level: warn }}\n"
        )
        proc = _browser.start_tollgate(
            binary, folder, gateway_yaml, apis, f"{base}/health", context=ssl.create_default_context(cafile=CA)
        )
        try:
            yield base
        finally:
            code = _browser.stop(proc)
        check(code == 0, f"the gateway exited with {code} after SIGTERM")
