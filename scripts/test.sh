#!/usr/bin/env bash
# Runs every check and test of the project on a fresh machine: installs what the tests need when it
# is missing, then formatting, lints and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# Redis tests start their own redis-server on a free port; they need the binary, never a running server.
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
# Off-the-shelf OAuth clients for the interoperability check (tests/interop/clients.py), in a virtual
# environment of ours: a system Python refuses `pip install` (PEP 668), and a fresh Debian has no Python.
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
python3 -c "import venv, ensurepip" >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
venv=target/interop-venv
if ! "$venv/bin/python" -c "import authlib, requests_oauthlib, jwt, cryptography" >/dev/null 2>&1; then
  echo "installing: authlib requests-oauthlib pyjwt[crypto] (pip, into $venv)"
  rm -rf "$venv"
  mkdir -p target
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check authlib requests-oauthlib "pyjwt[crypto]"
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
"$venv/bin/python" tests/interop/clients.py target/debug/tollgate
