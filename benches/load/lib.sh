# Shell pieces shared by benches/load/callgrind.sh and latency.sh (sourced, not run). Both put one
# target at a time in front of the same upstream and load it; what they share is that upstream and
# tollgate's plain-path configuration.

# Starts the upstream, nginx answering `return 200` with a 200-byte body (as in run.sh), under
# `$WORK/upstream`, pinned with `taskset -c CORE` when CORE is given. Sets UPSTREAM_PORT and adds the
# pid to PIDS. Needs WORK, LIB (benchlib.py) and PIDS.
start_upstream() { # start_upstream [CORE]
  local pin=()
  [ -n "${1:-}" ] && pin=(taskset -c "$1")
  UPSTREAM_PORT="$(python3 "$LIB" freeport)"
  mkdir -p "$WORK/upstream/tmp"
  cat >"$WORK/upstream/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $WORK/upstream/nginx.pid;
error_log $WORK/upstream/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/upstream/tmp/body;
    proxy_temp_path $WORK/upstream/tmp/proxy;
    fastcgi_temp_path $WORK/upstream/tmp/fastcgi;
    uwsgi_temp_path $WORK/upstream/tmp/uwsgi;
    scgi_temp_path $WORK/upstream/tmp/scgi;
    keepalive_requests 10000000;
    server {
        listen 127.0.0.1:$UPSTREAM_PORT;
        location / { default_type text/plain; return 200 "$(python3 -c 'print("u" * 199)')\n"; }
    }
}
CONF
  "${pin[@]}" "$(command -v nginx || echo /usr/sbin/nginx)" -p "$WORK/upstream/" \
    -e "$WORK/upstream/error.log" -c "$WORK/upstream/nginx.conf" >/dev/null 2>&1 &
  PIDS+=($!)
  python3 "$LIB" wait-http "http://127.0.0.1:$UPSTREAM_PORT/" >/dev/null
}

# tollgate on the plain path (auth none, memory store, one API at /bench/ → the upstream), or with
# SCENARIO=jwt_memory as run.sh's jwt_memory: an ES256 token required, a session rate limit and a quota
# that never refuse (the client secret is BENCH_SECRET, hashed once per script run).
tollgate_config() { # tollgate_config DIR PORT
  mkdir -p "$1/api-definitions" "$1/keys"
  cat >"$1/gateway.yaml" <<CONF
listen: 127.0.0.1:$2
public_url: http://tollgate.bench
api_definitions: api-definitions
storage: { backend: memory }
signing: { algorithm: ES256, key_file: keys/signing.pem, generate: true }
log: { level: warn, format: text }
limits: { max_connections_per_ip: 100000 }
CONF
  cat >"$1/api-definitions/bench.yaml" <<CONF
id: bench
listen_path: /bench/
strip_listen_path: true
upstream: { url: "http://127.0.0.1:$UPSTREAM_PORT" }
CONF
  if [ "${SCENARIO:-plain}" != plain ]; then
    [ -n "${BENCH_SECRET_HASH:-}" ] ||
      BENCH_SECRET_HASH="$(printf '%s' "$BENCH_SECRET" | "$TOLLGATE_BIN" hash-secret)" || return 1
    cat >>"$1/api-definitions/bench.yaml" <<CONF
auth: { type: oauth2, required_scopes: [read] }
oauth:
  grant_types: [client_credentials]
  access_token: { ttl: 12h }
  scopes: [read]
  clients:
    - { client_id: bench-client, secret_hash: "$BENCH_SECRET_HASH", grant_types: [client_credentials], scopes: [read] }
rate_limit: { rate: 100000000, per: 1s }
quota: { max: 1000000000000, period: 30d }
CONF
  else
    echo "auth: { type: none }" >>"$1/api-definitions/bench.yaml"
  fi
}
BENCH_SECRET="bench-secret-$RANDOM$RANDOM"

# With SCENARIO=jwt_memory or introspection: the header that carries a token for the API in DIR, in the
# array AUTH_HEADER, and the token in BENCH_TOKEN (empty otherwise). The token comes from a run of BIN outside the profiler (the same config and signing
# key, so the profiled process accepts it; the argon2 check of the secret is not profiled).
bench_token() { # bench_token BIN DIR
  AUTH_HEADER=()
  BENCH_TOKEN=""
  case "${SCENARIO:-plain}" in jwt_memory | introspection) ;; *) return 0 ;; esac
  local port pid token
  port="$(python3 "$LIB" freeport)"
  sed "s/^listen: .*/listen: 127.0.0.1:$port/" "$2/gateway.yaml" >"$2/token-run.yaml"
  "$1" run --config "$2/token-run.yaml" >"$2/token-run.log" 2>&1 &
  pid=$!
  python3 "$LIB" wait-http "$(ready_url tollgate "$port")" >/dev/null ||
    { cat "$2/token-run.log" >&2; kill "$pid"; return 1; }
  token="$(curl -sS -u "bench-client:$BENCH_SECRET" -d grant_type=client_credentials \
    "http://127.0.0.1:$port/bench/oauth/token" | python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  [ -n "$token" ] || return 1
  BENCH_TOKEN="$token"
  AUTH_HEADER=(-H "Authorization: Bearer $token")
}

# The command that runs TARGET (floor, tollgate or baseline) on PORT, in the array TARGET_CMD.
# Needs FLOOR_BIN, TOLLGATE_BIN, BASELINE_BIN and WORK.
target_command() { # target_command TARGET PORT
  local bin
  case "$1" in
    floor) TARGET_CMD=("$FLOOR_BIN" "127.0.0.1:$2" "127.0.0.1:$UPSTREAM_PORT" /bench) ;;
    tollgate | baseline)
      bin="$TOLLGATE_BIN"
      [ "$1" = baseline ] && bin="$BASELINE_BIN"
      [ -x "$bin" ] || { echo "error: no binary for $1" >&2; return 1; }
      tollgate_config "$WORK/$1" "$2"
      TARGET_CMD=("$bin" run --config "$WORK/$1/gateway.yaml")
      ;;
    *) echo "error: unknown target $1" >&2; return 1 ;;
  esac
}

# A URL of TARGET on PORT that answers 200 once it is up (with an OAuth scenario, /bench/ needs a token).
ready_url() { # ready_url TARGET PORT
  if [ "$1" != floor ] && [ "${SCENARIO:-plain}" != plain ]; then
    echo "http://127.0.0.1:$2/bench/.well-known/oauth-authorization-server"
  else
    echo "http://127.0.0.1:$2/bench/"
  fi
}
