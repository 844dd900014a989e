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

# tollgate on the plain path (auth none, memory store, one API at /bench/ → the upstream).
tollgate_config() { # tollgate_config DIR PORT
  mkdir -p "$1/api-definitions" "$1/keys"
  cat >"$1/gateway.yaml" <<CONF
listen: 127.0.0.1:$2
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
auth: { type: none }
CONF
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
