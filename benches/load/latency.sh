#!/usr/bin/env bash
# Latency at a fixed rate, target by target in front of the same upstream nginx: the floor
# (benches/load/floor_proxy.rs), tollgate (auth none, memory store) and optionally a baseline build.
# Uses `hey` from Debian (`apt-get install hey`) for machines without `oha` (run.sh's latency step
# uses oha when it is installed). hey has no latency correction and reports up to p99, so read its
# figures as a comparison between targets in one run, not as absolute tails.
#
#   benches/load/latency.sh                                      targets: floor tollgate
#   TARGETS="floor baseline tollgate" BASELINE_BIN=/tmp/tollgate-old benches/load/latency.sh
#
# Environment: RATE [5000] requests/s in all, WORKERS [50] (hey -c; each sends RATE/WORKERS per s),
# DURATION [20s], PROXY_CORE [0] and LOAD_CORE [1] (taskset: the proxy alone on one core, the upstream
# and hey on the other).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
LIB="$HERE/benchlib.py"
RATE="${RATE:-5000}"
WORKERS="${WORKERS:-50}"
DURATION="${DURATION:-20s}"
PROXY_CORE="${PROXY_CORE:-0}"
LOAD_CORE="${LOAD_CORE:-1}"
TARGETS="${TARGETS:-floor tollgate}"
TOLLGATE_BIN="${TOLLGATE_BIN:-$ROOT/target/release/tollgate}"
FLOOR_BIN="${FLOOR_BIN:-$ROOT/target/release/examples/floor_proxy}"
BASELINE_BIN="${BASELINE_BIN:-}"

for tool in hey nginx taskset; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] ||
    { echo "error: $tool is not installed (apt-get install hey nginx-light util-linux)" >&2; exit 1; }
done

WORK="$(mktemp -d /tmp/tollgate-latency.XXXXXX)"
chmod 755 "$WORK"
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

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
taskset -c "$LOAD_CORE" "$(command -v nginx || echo /usr/sbin/nginx)" -p "$WORK/upstream/" \
  -e "$WORK/upstream/error.log" -c "$WORK/upstream/nginx.conf" >/dev/null 2>&1 &
PIDS+=($!)
python3 "$LIB" wait-http "http://127.0.0.1:$UPSTREAM_PORT/" >/dev/null

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

per_worker="$(awk -v r="$RATE" -v w="$WORKERS" 'BEGIN { printf "%.2f", r / w }')"
echo "Latency at $RATE requests/s ($WORKERS hey workers at $per_worker/s each), $DURATION, keep-alive:"
printf '\n| target | requests/s | p10 | p50 | p90 | p99 | slowest | non-200 |\n|---|---|---|---|---|---|---|---|\n'
for target in $TARGETS; do
  port="$(python3 "$LIB" freeport)"
  case "$target" in
    floor) cmd=("$FLOOR_BIN" "127.0.0.1:$port" "127.0.0.1:$UPSTREAM_PORT" /bench) ;;
    tollgate | baseline)
      bin="$TOLLGATE_BIN"
      [ "$target" = baseline ] && bin="$BASELINE_BIN"
      [ -x "$bin" ] || { echo "error: no binary for $target" >&2; exit 1; }
      tollgate_config "$WORK/$target" "$port"
      cmd=("$bin" run --config "$WORK/$target/gateway.yaml")
      ;;
    *) echo "error: unknown target $target" >&2; exit 1 ;;
  esac
  taskset -c "$PROXY_CORE" "${cmd[@]}" >"$WORK/$target.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  python3 "$LIB" wait-http "http://127.0.0.1:$port/bench/" 60 >/dev/null || { cat "$WORK/$target.log" >&2; exit 1; }
  taskset -c "$LOAD_CORE" hey -z 3s -c "$WORKERS" -q "$per_worker" "http://127.0.0.1:$port/bench/" >/dev/null # warm-up
  taskset -c "$LOAD_CORE" hey -z "$DURATION" -c "$WORKERS" -q "$per_worker" "http://127.0.0.1:$port/bench/" >"$WORK/$target.hey"
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  # hey prints seconds; the table shows milliseconds.
  awk -v target="$target" '
    /Requests\/sec:/ { rps = $2 }
    /Slowest:/ { slowest = $2 * 1000 }
    /10% in/ { p10 = $3 * 1000 }
    /50% in/ { p50 = $3 * 1000 } /90% in/ { p90 = $3 * 1000 } /99% in/ { p99 = $3 * 1000 }
    /^\s*\[[0-9]+\]/ { code = $1; gsub(/[\[\]]/, "", code); if (code != "200") bad += $2 }
    END { printf "| %s | %.0f | %.2f ms | %.2f ms | %.2f ms | %.2f ms | %.2f ms | %d |\n", target, rps, p10, p50, p90, p99, slowest, bad }
  ' "$WORK/$target.hey"
done
