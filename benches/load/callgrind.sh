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
#   SCENARIO=jwt_memory benches/load/callgrind.sh   an ES256 token, session rate limit and quota (memory)
#   SCENARIO=token_issuance TARGETS="tollgate baseline" benches/load/callgrind.sh
#                                                   client_credentials tokens (ES256, the client's
#                                                   argon2id secret cached after the warm-up); no floor
#   SCENARIO=introspection TARGETS="tollgate baseline" benches/load/callgrind.sh
#                                                   RFC 7662 calls for one token; no floor
#
# Needs a release build with symbols for readable profiles:
#   CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release --bin tollgate --example floor_proxy
# Environment: SCENARIO [plain] (or jwt_memory, token_issuance or introspection, as in run.sh), DURATION [10s] (wrk under callgrind:
# ~1,000 requests/s), CONNECTIONS [8], OUT_DIR [target/bench-load/callgrind-<timestamp>] (the callgrind
# files and the top functions of each target).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
LIB="$HERE/benchlib.py"
# shellcheck source=benches/load/lib.sh
. "$HERE/lib.sh"
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

start_upstream

printf '| target | requests | instructions (Ir) | Ir per request | ÷ floor |\n|---|---|---|---|---|\n' >"$OUT_DIR/summary.md"
FLOOR_IR=""
for target in $TARGETS; do
  port="$(python3 "$LIB" freeport)"
  case "$target:${SCENARIO:-plain}" in
    floor:token_issuance | floor:introspection)
      echo "error: the floor has no OAuth endpoints (TARGETS=\"tollgate baseline\")" >&2; exit 1 ;;
  esac
  target_command "$target" "$port" || exit 1
  AUTH_HEADER=()
  [ "$target" = floor ] || bench_token "${TARGET_CMD[0]}" "$WORK/$target" || { echo "error: no token from $target" >&2; exit 1; }
  out="$WORK/$target.callgrind"
  valgrind --tool=callgrind --instr-atstart=no --vgdb=yes --callgrind-out-file="$out" "${TARGET_CMD[@]}" \
    >"$WORK/$target.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  python3 "$LIB" wait-http "$(ready_url "$target" "$port")" 120 >/dev/null || {
    cat "$WORK/$target.log" >&2
    exit 1
  }
  url="http://127.0.0.1:$port/bench/"
  WRK_ARGS=("${AUTH_HEADER[@]}")
  case "${SCENARIO:-plain}" in
    token_issuance) endpoint=token body="grant_type=client_credentials" ;;
    introspection) endpoint=introspect body="token=$BENCH_TOKEN" ;;
    *) endpoint="" ;;
  esac
  if [ -n "$endpoint" ]; then
    url="${url}oauth/$endpoint"
    cat >"$WORK/post.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic $(printf '%s' "bench-client:$BENCH_SECRET" | base64 -w0)"
wrk.body = "$body"
EOF
    WRK_ARGS=(-s "$WORK/post.lua")
  fi
  wrk -t1 -c"$CONNECTIONS" -d3s "${WRK_ARGS[@]}" "$url" >/dev/null # warm-up, not counted
  callgrind_control -i on "$pid" >/dev/null
  wrk -t1 -c"$CONNECTIONS" -d"$DURATION" "${WRK_ARGS[@]}" "$url" >"$WORK/$target.wrk"
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
