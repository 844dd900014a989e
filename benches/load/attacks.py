#!/usr/bin/env python3
"""The attacks of issue 9 against a tollgate binary, with figures (docs/benchmarks.md, "Attacks").

usage: [ATTACK_MAX_CONNECTIONS=N] attacks.py [PATH_TO_TOLLGATE]   (default: target/release/tollgate, N=50)

Starts the binary with the sample gateway.yaml and api-definitions (copied to a temporary folder),
changed only where an attack needs it: loopback listeners on free ports, `max_connections: 50` (the
setting of the issue), and 5 s instead of 30/60 s for the body, idle and upstream timeouts, so the
run takes a minute instead of several. Two more API definitions put an open API on /pub/ (strip off)
in front of a protected one on /pub/admin/, both forwarding to a recording upstream of this script.

Prints one line per attack: what was sent, what came back, and the figure that matters. Python's
standard library only: raw sockets, so headers go out exactly as written (underscores included).
Exit status 1 when an attack succeeds.
"""

import base64
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ADMIN_SECRET = "attack-run-admin-secret-0123456789"
DEMO_SECRET = "demo-secret-change-me"
FAILED = []
# ATTACK_MAX_CONNECTIONS=10000 runs the same attacks with the default slot count (the flood then
# reaches the verification pool's queue instead of the connection limit).
MAX_CONNECTIONS = int(os.environ.get("ATTACK_MAX_CONNECTIONS", "50"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def verdict(ok, line):
    print(("held  " if ok else "FAILED") + "  " + line, flush=True)
    if not ok:
        FAILED.append(line)


def connect(port, source="127.0.0.1", timeout=10):
    s = socket.socket()
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def read_all(s, limit=30):
    """Everything until the peer closes (or `limit` seconds); None when it never closed."""
    s.settimeout(limit)
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk
    except ConnectionResetError:
        return out
    except socket.timeout:
        return None


def request(port, method, path, headers=(), body=b"", source="127.0.0.1"):
    """One HTTP/1.1 request with Connection: close; (status, headers dict, body bytes)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    with connect(port, source) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        raw = read_all(s) or b""
    head, _, rest = raw.partition(b"\r\n\r\n")
    first, *fields = head.decode("latin-1").split("\r\n") if head else ["HTTP/1.1 0"]
    status = int(first.split()[1]) if len(first.split()) > 1 else 0
    hdrs = {}
    for f in fields:
        k, _, v = f.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    if hdrs.get("transfer-encoding") == "chunked":
        body_out, data = b"", rest
        while data:
            size_line, _, data = data.partition(b"\r\n")
            size = int(size_line or b"0", 16)
            if size == 0:
                break
            body_out, data = body_out + data[:size], data[size + 2 :]
        rest = body_out
    return status, hdrs, rest


def form(pairs):
    return urllib.parse.urlencode(pairs).encode()


def basic(user, secret):
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


def vmhwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1))


class Recorder(http.server.BaseHTTPRequestHandler):
    """The upstream: records every request; /stall sends a head and part of a body, then waits."""

    seen = []
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        Recorder.seen.append((self.path, [(k, v) for k, v in self.headers.items()]))
        if self.path.endswith("/stall"):
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)
            self.wfile.flush()
            time.sleep(60)
            return
        body = b'{"ok":true}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def start_upstream():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


def start_gateway(binary, folder, upstream_port):
    port, admin_port = free_port(), free_port()
    shutil.copytree(os.path.join(ROOT, "api-definitions"), os.path.join(folder, "api-definitions"))
    shutil.copy(os.path.join(ROOT, "users.yaml"), folder)
    with open(os.path.join(ROOT, "gateway.yaml")) as f:
        yaml = f.read()
    yaml = yaml.replace("listen: 0.0.0.0:8080", f"listen: 127.0.0.1:{port}")
    yaml = yaml.replace("listen: 127.0.0.1:8081", f"listen: 127.0.0.1:{admin_port}")
    yaml = yaml.replace("public_url: http://localhost:8080", f"public_url: http://localhost:{port}")
    for name, value in [("body_read_timeout", "5s"), ("idle_timeout", "5s"), ("upstream_timeout", "5s")]:
        yaml = re.sub(rf"{name}: \S+", f"{name}: {value}", yaml)
    yaml = yaml.replace("limits:\n", f"limits:\n  max_connections: {MAX_CONNECTIONS}\n")
    yaml = yaml.replace("log:\n  level: info", "log:\n  level: warn")
    with open(os.path.join(folder, "gateway.yaml"), "w") as f:
        f.write(yaml)
    up = f"http://127.0.0.1:{upstream_port}"
    with open(os.path.join(folder, "api-definitions", "pub.yaml"), "w") as f:
        f.write(f"id: pub\nlisten_path: /pub/\nstrip_listen_path: false\nupstream: {{ url: {up} }}\nauth: {{ type: none }}\n")
    with open(os.path.join(folder, "api-definitions", "pubadmin.yaml"), "w") as f:
        with open(os.path.join(ROOT, "api-definitions", "movies.yaml")) as movies:
            demo_hash = re.search(r'secret_hash: "([^"]+)"', movies.read()).group(1)
        f.write(
            f"""id: pubadmin
listen_path: /pub/admin/
upstream: {{ url: {up} }}
auth:
  type: oauth2
  forward_claims: {{ X-User-Id: sub }}
oauth:
  grant_types: [client_credentials, password, refresh_token]
  scopes: [read, write]
  clients:
    - client_id: ops
      secret_hash: "{demo_hash}"
      grant_types: [client_credentials]
      scopes: [read]
"""
        )
    env = dict(os.environ, TOLLGATE_ADMIN_SECRET=ADMIN_SECRET)
    proc = subprocess.Popen(
        [binary, "run", "--config", os.path.join(folder, "gateway.yaml")],
        cwd=folder,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if request(port, "GET", "/health")[0] == 200:
                return proc, port, admin_port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the gateway did not start: " + proc.stderr.read().decode(errors="replace"))


def admin(admin_port, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else b""
    headers = [("Authorization", f"Bearer {ADMIN_SECRET}")]
    if body is not None:
        headers.append(("Content-Type", "application/json"))
    status, _, out = request(admin_port, method, path, headers, data)
    return status, (json.loads(out) if out.strip() else None)


def metric(admin_port, name):
    _, _, text = request(admin_port, "GET", "/metrics", [("Authorization", f"Bearer {ADMIN_SECRET}")])
    total = 0
    for line in text.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


TOKEN_HEAD = (
    b"POST /movies/oauth/token HTTP/1.1\r\nHost: x\r\n"
    b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n"
)


def stalled_bodies(port):
    attackers = []
    for _ in range(50):
        s = connect(port)
        try:
            s.sendall(TOKEN_HEAD)
        except OSError:
            pass
        attackers.append(s)
    start = time.time()
    try:
        status = request(port, "GET", "/health", source="127.0.0.2")[0]
    except OSError:
        status = 0
    health_ms = (time.time() - start) * 1000
    with ThreadPoolExecutor(len(attackers)) as pool:
        answers = list(pool.map(lambda s: read_all(s, 30), attackers))
    stalled_for = time.time() - start
    refused = sum(1 for a in answers if a == b"")
    timed_out = sum(1 for a in answers if a and a.startswith(b"HTTP/1.1 408"))
    verdict(
        status == 200 and refused + timed_out == 50,
        f"50 stalled token bodies from 127.0.0.1 (max_connections {MAX_CONNECTIONS}): /health from 127.0.0.2 → {status} "
        f"in {health_ms:.0f} ms; {refused} closed at accept (per-address cap), {timed_out} got 408, "
        f"all gone after {stalled_for:.1f} s (body_read_timeout 5s)",
    )


def idle_h2c(port):
    s = connect(port)
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
    start = time.time()
    out = read_all(s, 30)
    held = time.time() - start
    frames, data = [], out or b""
    while len(data) >= 9:
        length = int.from_bytes(data[:3], "big")
        frames.append(data[3])
        data = data[9 + length :]
    goaway = 7 in frames  # frame type 7 = GOAWAY
    verdict(out is not None, f"h2c preface + SETTINGS, then nothing: closed after {held:.1f} s (idle_timeout 5s), GOAWAY seen: {goaway}")


def stalled_upstream(port):
    s = connect(port)
    s.sendall(b"GET /pub/stall HTTP/1.1\r\nHost: x\r\n\r\n")
    start = time.time()
    out = read_all(s, 30)
    held = time.time() - start
    verdict(
        out is not None and len(out) < 1000000,
        f"upstream sends a head and 1,000 of 1,000,000 body bytes, then stalls: client connection closed after "
        f"{held:.1f} s (upstream_timeout 5s) with {len(out or b'')} bytes",
    )


def secret_flood(port, admin_port, pid):
    before = vmhwm_kib(pid)
    verified_before = metric(admin_port, "tollgate_secret_verifications_total")

    def guess(i):
        # 400 guesses from 200 addresses: the per-address throttle alone would stop one address at 5.
        source = f"127.0.1.{i % 200 + 1}"
        return request(
            port,
            "POST",
            "/movies/oauth/token",
            [("Authorization", basic("demo-service", f"wrong-{i}")), ("Content-Type", "application/x-www-form-urlencoded")],
            form({"grant_type": "client_credentials"}),
            source=source,
        )[0]

    with ThreadPoolExecutor(400) as pool:
        statuses = list(pool.map(guess, range(400)))
    after = vmhwm_kib(pid)
    counts = {s: statuses.count(s) for s in sorted(set(statuses))}
    verified = metric(admin_port, "tollgate_secret_verifications_total") - verified_before
    verdict(
        (after - before) < 512 * 1024,
        f"400 parallel wrong client secrets from 200 addresses: peak RSS (VmHWM) {before / 1024:.0f} → "
        f"{after / 1024:.0f} MiB (+{(after - before) / 1024:.0f} MiB); answers {counts}; argon2 runs {verified:.0f}",
    )


def password_guesses(port, admin_port):
    verified_before = metric(admin_port, "tollgate_secret_verifications_total")

    def guess(i):
        return request(
            port,
            "POST",
            "/movies/oauth/token",
            [("Authorization", basic("demo-app", DEMO_SECRET)), ("Content-Type", "application/x-www-form-urlencoded")],
            form({"grant_type": "password", "username": "alice", "password": f"guess-{i}"}),
            source="127.0.0.3",
        )[0]

    with ThreadPoolExecutor(40) as pool:
        statuses = list(pool.map(guess, range(40)))
    counts = {s: statuses.count(s) for s in sorted(set(statuses))}
    # argon2 runs: the client's secret (once: identical in-flight authentications share it) + passwords.
    verified = metric(admin_port, "tollgate_secret_verifications_total") - verified_before
    verdict(
        statuses.count(400) <= 5,
        f"40 parallel password guesses for alice from one address: answers {counts}; argon2 runs {verified:.0f} "
        f"(client secret + at most 5 passwords)",
    )


def token(port, api, client):
    _, _, body = request(
        port,
        "POST",
        f"/{api}/oauth/token",
        [("Authorization", basic(client, DEMO_SECRET)), ("Content-Type", "application/x-www-form-urlencoded")],
        form({"grant_type": "client_credentials"}),
        source="127.0.0.4",
    )
    return json.loads(body)["access_token"]


def paths(port):
    Recorder.seen.clear()
    semicolon = request(port, "GET", "/pub/admin;x/y")[0]
    encoded = request(port, "GET", "/pub/%61dmin/y")[0]
    reached = [p for p, _ in Recorder.seen]
    verdict(
        semicolon == 400 and encoded == 401 and not reached,
        f"/pub/admin;x/y → {semicolon}; /pub/%61dmin/y without a token → {encoded}; upstream saw {reached}",
    )


def spoofed_headers(port):
    access = token(port, "pub/admin", "ops")
    Recorder.seen.clear()
    status = request(
        port,
        "GET",
        "/pub/admin/me",
        [
            ("Authorization", f"Bearer {access}"),
            ("X_User_Id", "admin"),
            ("X-Real-IP", "10.9.9.9"),
            ("True-Client-IP", "10.9.9.9"),
            ("X_Forwarded_For", "10.9.9.9"),
        ],
    )[0]
    headers = Recorder.seen[-1][1] if Recorder.seen else []
    norm = [(k.lower().replace("_", "-"), v) for k, v in headers]
    spoofed = [k for k, v in norm if v in ("admin", "10.9.9.9") or "10.9.9.9" in v]
    user = [v for k, v in norm if k == "x-user-id"]
    verdict(
        status == 200 and not spoofed and user == ["ops"],
        f"X_User_Id: admin, X-Real-IP, True-Client-IP, X_Forwarded_For beside a valid token → {status}; "
        f"upstream got X-User-Id {user}, spoofed headers {spoofed}",
    )


def narrowed_refresh(port, admin_port):
    status, created = admin(
        admin_port,
        "POST",
        "/apis/movies/clients",
        {"client_id": "narrowed", "grant_types": ["password", "refresh_token"], "scopes": ["read", "write"]},
    )
    secret = created["client_secret"]
    _, _, body = request(
        port,
        "POST",
        "/movies/oauth/token",
        [("Authorization", basic("narrowed", secret)), ("Content-Type", "application/x-www-form-urlencoded")],
        form({"grant_type": "password", "username": "alice", "password": "alice-password", "scope": "read write"}),
        source="127.0.0.5",
    )
    first = json.loads(body)
    if "refresh_token" not in first:
        verdict(False, f"the password grant for the narrowed client failed (alice locked out?): {first}")
        return
    admin(admin_port, "PUT", "/apis/movies/clients/narrowed", {"grant_types": ["password", "refresh_token"], "scopes": ["read"]})
    _, _, body = request(
        port,
        "POST",
        "/movies/oauth/token",
        [("Authorization", basic("narrowed", secret)), ("Content-Type", "application/x-www-form-urlencoded")],
        form({"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}),
        source="127.0.0.5",
    )
    refreshed = json.loads(body)
    verdict(
        refreshed.get("scope") == "read",
        f"client narrowed from [read, write] to [read] by the admin API: session scope {first.get('scope')!r}, "
        f"refreshed scope {refreshed.get('scope')!r}",
    )


def main():
    binary = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "release", "tollgate"))
    upstream_port = start_upstream()
    with tempfile.TemporaryDirectory() as folder:
        proc, port, admin_port = start_gateway(binary, folder, upstream_port)
        try:
            print(f"tollgate {binary} (pid {proc.pid}), proxy :{port}, admin :{admin_port}", flush=True)
            stalled_bodies(port)
            idle_h2c(port)
            stalled_upstream(port)
            secret_flood(port, admin_port, proc.pid)
            password_guesses(port, admin_port)
            paths(port)
            spoofed_headers(port)
            narrowed_refresh(port, admin_port)
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    if FAILED:
        raise SystemExit(f"{len(FAILED)} attack(s) got through")
    print("every attack was held")


if __name__ == "__main__":
    main()
