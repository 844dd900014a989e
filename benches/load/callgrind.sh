#!/usr/bin/env bash
# Instructions per request on the plain proxy path, counted by valgrind's callgrind: the floor
# (benches/load/floor_proxy.rs) and tollgate (auth none, memory store), one after the other in front of
# the same upstream nginx, under the same wrk load. Instruction counts do not depend on what else the
# machine is doing, so before/after comparisons hold on a shared machine where wall-clock ratios do not
# (docs/benchmarks.md). Instrumentation is switched on after a warm-up and off before shutdown, so start-up
# (config, keys) is not counted.
#
#   benches/load/callgrind.sh                     targets: floor tollgate
#   TARGETS="tollgate baseline" BASELINE_BIN=/tmp/tollgate-old benches/load/callgrind.sh
#
# Needs a release build with symbols for readable profiles:
#   CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release --bin tollgate --example floor_proxy
# Environment: DURATION [10s] (wrk under callgrind: ~1,000 requests/s), CONNECTIONS [8], OUT_DIR
# [target/bench-load/callgrind-<timestamp>] (the callgrind files and the top functions of each target).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
LIB="$HERE/benchlib.py"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-8}"
TARGETS="${TARGETS:-floor tollgate}"
TOLLGATE_BIN="${TOLLGATE_BIN:-$ROOT/target/release/tollgate}"
FLOOR_BIN="${FLOOR_BIN:-$ROOT/target/release/examples/floor_proxy}"
BASELINE_BIN="${BASELINE_BIN:-}"
OUT_DIR="${OUT_DIR:-$ROOT/target/bench-load/callgrind-$(date +%Y%m%d-%H%M%S)}"

for tool in valgrind callgrind_control callgrind_annotate wrk nginx; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] ||
    { echo "error: $tool is not installed (apt-get install valgrind wrk nginx)" >&2; exit 1; }
done

WORK="$(mktemp -d /tmp/tollgate-callgrind.XXXXXX)"
chmod 755 "$WORK"
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$OUT_DIR"

# The upstream: nginx `return 200` with a 200-byte body, as in run.sh.
UPSTREAM_PORT="$(python3 "$LIB" freeport)"
mkdir -p "$WORK/upstream/tmp"
cat >"$WORK/upstream/nginx.conf" <<EOF
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
EOF
"$(command -v nginx || echo /usr/sbin/nginx)" -p "$WORK/upstream/" -e "$WORK/upstream/error.log" \
  -c "$WORK/upstream/nginx.conf" >/dev/null 2>&1 &
PIDS+=($!)
python3 "$LIB" wait-http "http://127.0.0.1:$UPSTREAM_PORT/" >/dev/null

tollgate_config() { # tollgate_config DIR PORT
  mkdir -p "$1/api-definitions" "$1/keys"
  cat >"$1/gateway.yaml" <<EOF
listen: 127.0.0.1:$2
api_definitions: api-definitions
storage: { backend: memory }
signing: { algorithm: ES256, key_file: keys/signing.pem, generate: true }
log: { level: warn, format: text }
limits: { max_connections_per_ip: 100000 }
EOF
  cat >"$1/api-definitions/bench.yaml" <<EOF
id: bench
listen_path: /bench/
strip_listen_path: true
upstream: { url: "http://127.0.0.1:$UPSTREAM_PORT" }
auth: { type: none }
EOF
}

printf '| target | requests | instructions (Ir) | Ir per request | ÷ floor |\n|---|---|---|---|---|\n' >"$OUT_DIR/summary.md"
FLOOR_IR=""
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
  out="$WORK/$target.callgrind"
  valgrind --tool=callgrind --instr-atstart=no --vgdb=yes --callgrind-out-file="$out" "${cmd[@]}" \
    >"$WORK/$target.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  python3 "$LIB" wait-http "http://127.0.0.1:$port/bench/" 120 >/dev/null || {
    cat "$WORK/$target.log" >&2
    exit 1
  }
  wrk -t1 -c"$CONNECTIONS" -d3s "http://127.0.0.1:$port/bench/" >/dev/null # warm-up, not counted
  callgrind_control -i on "$pid" >/dev/null
  wrk -t1 -c"$CONNECTIONS" -d"$DURATION" "http://127.0.0.1:$port/bench/" >"$WORK/$target.wrk"
  callgrind_control -i off "$pid" >/dev/null
  callgrind_control -d "$pid" >/dev/null
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  grep -q 'Non-2xx\|Socket errors' "$WORK/$target.wrk" && { cat "$WORK/$target.wrk" >&2; echo "error: $target answered errors" >&2; exit 1; }
  requests="$(grep -oE '^\s*[0-9]+ requests in' "$WORK/$target.wrk" | grep -oE '[0-9]+')"
  # The dump taken while collecting (`.1`); the final one at exit holds nothing after `-i off`.
  dump="$(ls "$out".* 2>/dev/null | head -1)"
  cp "$dump" "$OUT_DIR/$target.callgrind"
  # Whole outputs first: `| head` would end callgrind_annotate with SIGPIPE under pipefail.
  callgrind_annotate --inclusive=no "$dump" >"$WORK/$target.self.txt" 2>/dev/null
  callgrind_annotate --inclusive=yes "$dump" >"$WORK/$target.incl.txt" 2>/dev/null
  head -60 "$WORK/$target.self.txt" >"$OUT_DIR/$target.top.txt"
  head -80 "$WORK/$target.incl.txt" >"$OUT_DIR/$target.inclusive.txt"
  ir="$(grep -m1 'PROGRAM TOTALS' "$WORK/$target.self.txt" | awk '{gsub(",", "", $1); print $1}')"
  per=$((ir / requests))
  ratio="—"
  [ "$target" = floor ] && FLOOR_IR="$per"
  [ -n "$FLOOR_IR" ] && ratio="$(awk -v a="$per" -v b="$FLOOR_IR" 'BEGIN { printf "%.2f", a / b }')"
  printf '| %s | %s | %s | %s | %s |\n' "$target" "$requests" "$ir" "$per" "$ratio" >>"$OUT_DIR/summary.md"
done
cat "$OUT_DIR/summary.md"
echo "profiles: $OUT_DIR" >&2
