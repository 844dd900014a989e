#!/usr/bin/env bash
# Runs every check and test of the project on a fresh machine: installs what the tests need when it
# is missing, then formatting, lints and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

installed=$(rustup component list --installed 2>/dev/null || true)
for component in rustfmt clippy; do
  grep -q "^$component" <<<"$installed" || rustup component add "$component"
done
# The quick checks first: a formatting or lint error shows in seconds, before anything is installed.
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== layers: no folder imports a higher layer, no circles (docs/architecture.md)"
./scripts/check-layers.sh
echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings

need_apt=()
# Redis tests start their own redis-server on a free port; they need the binary, never a running server.
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
# Tests signal child processes (redis-server, the gateway binary) with kill(1), which is procps'.
[ -x /bin/kill ] || [ -x /usr/bin/kill ] || need_apt+=(procps)
# Off-the-shelf OAuth clients for the interoperability check (tests/interop/clients.py), in a virtual
# environment of ours: a system Python refuses `pip install` (PEP 668), and a fresh Debian has no Python.
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
python3 -c "import venv, ensurepip" >/dev/null 2>&1 || need_apt+=(python3-venv)
# The browser tests (tests/browser/cors.py, admin_ui.py) drive Debian's Chromium: Playwright cannot
# download a browser build of its own here.
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
venv=target/interop-venv
if ! "$venv/bin/python" -c "import authlib, requests_oauthlib, jwt, cryptography, playwright" >/dev/null 2>&1; then
  echo "installing: authlib requests-oauthlib pyjwt[crypto] playwright (pip, into $venv)"
  rm -rf "$venv"
  mkdir -p target
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check authlib requests-oauthlib "pyjwt[crypto]" playwright
fi
echo "== cargo test"
# Built first, without a bound: a build from nothing on a slow or shared machine takes what it takes
# (over 25 minutes on 2 busy cores), and a bound on build and run together would fail a healthy run.
cargo test --locked --all-targets --no-run
# A bound on running them: a test that hangs fails CI instead of holding it until it is killed.
timeout --kill-after=1m 30m cargo test --locked --all-targets
echo "== interop: Authlib, requests-oauthlib and PyJWT against the tollgate binary"
cargo build --locked --bin tollgate
"$venv/bin/python" tests/interop/clients.py target/debug/tollgate
echo "== interop: an Authlib OpenID Connect relying party (discovery, code + PKCE + nonce, ID token, userinfo)"
"$venv/bin/python" tests/interop/oidc.py target/debug/tollgate
echo "== browser: CORS preflight and actual requests in headless Chromium (screenshots in target/screenshots/)"
timeout 5m "$venv/bin/python" tests/browser/cors.py target/debug/tollgate
echo "== browser: the admin web UI in headless Chromium (screenshots in target/ui-screenshots/)"
timeout 5m "$venv/bin/python" tests/browser/admin_ui.py target/debug/tollgate
echo "== browser: OpenID Connect login session in headless Chromium (sign in once, a second client skips the password form)"
timeout 5m "$venv/bin/python" tests/browser/oidc.py target/debug/tollgate
