#!/usr/bin/env bash
# Runs every check and test of the project on a fresh machine: installs what the tests need when it
# is missing, then formatting, lints and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# Redis tests start their own redis-server on a free port; they need the binary, never a running server.
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# Off-the-shelf OAuth clients for the interoperability check (tests/interop/clients.py).
if ! python3 -c "import authlib, requests_oauthlib, jwt, cryptography" >/dev/null 2>&1; then
  echo "installing: authlib requests-oauthlib pyjwt[crypto] (pip)"
  python3 -m pip install --quiet --disable-pip-version-check authlib requests-oauthlib "pyjwt[crypto]"
fi
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --locked --all-targets
echo "== interop: Authlib, requests-oauthlib and PyJWT against the tollgate binary"
cargo build --locked --bin tollgate
python3 tests/interop/clients.py target/debug/tollgate
