#!/usr/bin/env bash
# Latency at a fixed rate, target by target in front of the same upstream nginx: the floor
# (benches/load/floor_proxy.rs), tollgate (auth none, memory store) and optionally a baseline build.
# Uses `oha` when it is installed (`cargo install oha`: latency correction, percentiles to p99.9) and
# `hey` from Debian (`apt-get install hey`) otherwise. hey has no latency correction and reports up
# to p99, so read its figures as a comparison between targets in one run, not as absolute tails.
#
#   benches/load/latency.sh                                      targets: floor tollgate
#   TARGETS="floor baseline tollgate" BASELINE_BIN=/tmp/tollgate-old benches/load/latency.sh
#   TARGETS="floor tollgate floor tollgate" benches/load/latency.sh   alternated: one row per run
#
# Environment: RATE [5000] requests/s in all, WORKERS [50] (hey -c; each sends RATE/WORKERS per s),
# DURATION [20s], PROXY_CORE [0] and LOAD_CORE [1] (taskset: the proxy alone on one core, the upstream
# and the load tool on the other), TOOL [oha when installed, else hey].
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
LIB="$HERE/benchlib.py"
# shellcheck source=benches/load/lib.sh
. "$HERE/lib.sh"
RATE="${RATE:-5000}"
WORKERS="${WORKERS:-50}"
DURATION="${DURATION:-20s}"
PROXY_CORE="${PROXY_CORE:-0}"
LOAD_CORE="${LOAD_CORE:-1}"
TARGETS="${TARGETS:-floor tollgate}"
TOLLGATE_BIN="${TOLLGATE_BIN:-$ROOT/target/release/tollgate}"
FLOOR_BIN="${FLOOR_BIN:-$ROOT/target/release/examples/floor_proxy}"
BASELINE_BIN="${BASELINE_BIN:-}"

TOOL="${TOOL:-$(command -v oha >/dev/null 2>&1 && echo oha || echo hey)}"
for tool in "$TOOL" nginx taskset; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] ||
    { echo "error: $tool is not installed (cargo install oha, or apt-get install hey nginx-light util-linux)" >&2; exit 1; }
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

start_upstream "$LOAD_CORE"

per_worker="$(awk -v r="$RATE" -v w="$WORKERS" 'BEGIN { printf "%.2f", r / w }')"
if [ "$TOOL" = oha ]; then
  echo "Latency at $RATE requests/s (oha, $WORKERS connections, latency correction), $DURATION, keep-alive:"
else
  echo "Latency at $RATE requests/s ($WORKERS hey workers at $per_worker/s each), $DURATION, keep-alive:"
  printf '\n| target | requests/s | p10 | p50 | p90 | p99 | slowest | non-200 |\n|---|---|---|---|---|---|---|---|\n'
fi
OHA_FILES=()
run=0
for target in $TARGETS; do
  run=$((run + 1))
  port="$(python3 "$LIB" freeport)"
  target_command "$target" "$port" || exit 1
  taskset -c "$PROXY_CORE" "${TARGET_CMD[@]}" >"$WORK/$target.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  python3 "$LIB" wait-http "http://127.0.0.1:$port/bench/" 60 >/dev/null || { cat "$WORK/$target.log" >&2; exit 1; }
  url="http://127.0.0.1:$port/bench/"
  if [ "$TOOL" = oha ]; then
    taskset -c "$LOAD_CORE" oha --no-tui -z 3s -c "$WORKERS" -q "$RATE" "$url" >/dev/null 2>&1 # warm-up
    taskset -c "$LOAD_CORE" oha --no-tui -z "$DURATION" -c "$WORKERS" -q "$RATE" --latency-correction "$url" \
      >"$WORK/$run.oha" 2>&1
    OHA_FILES+=("$target=$WORK/$run.oha")
  else
    taskset -c "$LOAD_CORE" hey -z 3s -c "$WORKERS" -q "$per_worker" "$url" >/dev/null # warm-up
    taskset -c "$LOAD_CORE" hey -z "$DURATION" -c "$WORKERS" -q "$per_worker" "$url" >"$WORK/$target.hey"
  fi
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  [ "$TOOL" = oha ] && continue
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
# The first target is the reference of the "added" columns (the floor, by default).
[ "$TOOL" = oha ] && python3 "$LIB" latency-table "${OHA_FILES[@]}"
exit 0
