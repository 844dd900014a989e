"""Shared by the browser tests: start a tollgate binary on free ports and wait for it, serve a page on
an origin of its own, launch Debian's Chromium through Playwright, and fail with an exit status.
"""

import http.server
import os
import socket
import subprocess
import threading
import time
import urllib.request

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
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


def check(condition, detail, what="browser check"):
    """Like assert, but never compiled away (python -O drops assert statements)."""
    if not condition:
        raise SystemExit(f"{what} failed: {detail}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hash_secret(binary, secret):
    out = subprocess.run([binary, "hash-secret"], input=secret.encode(), capture_output=True, check=True)
    return out.stdout.decode().strip()


def serve(handler_class, port):
    """An HTTP server on its own port (its own origin), in a daemon thread."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler_class)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


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

    return serve(Handler, port)


def start_tollgate(binary, folder, gateway_yaml, apis, health_url, context=None):
    """Writes gateway.yaml and api-definitions/<id>.yaml into `folder`, starts the binary on it and
    waits (at most 10 s) until `health_url` answers 200 (over HTTPS: verified with the SSL `context`)."""
    with open(os.path.join(folder, "gateway.yaml"), "w") as f:
        f.write(gateway_yaml)
    os.makedirs(os.path.join(folder, "api-definitions"), exist_ok=True)
    for api_id, yaml in apis.items():
        with open(os.path.join(folder, "api-definitions", f"{api_id}.yaml"), "w") as f:
            f.write(yaml)
    proc = subprocess.Popen([binary, "run", "--config", os.path.join(folder, "gateway.yaml")])
    for _ in range(200):
        try:
            with urllib.request.urlopen(health_url, timeout=1, context=context) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"tollgate exited with {proc.returncode}")
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("tollgate did not start")


def stop(proc):
    """SIGTERM, then the exit status (killed after 15 s: the status then says so, -9)."""
    proc.terminate()
    try:
        return proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def launch(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
