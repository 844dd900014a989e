#!/usr/bin/env bash
# Load comparison of tollgate with Debian's nginx and a direct upstream (method: shared/BENCHMARKS.md,
# results: docs/benchmarks.md).
#
#   benches/load/run.sh [SCENARIO...]      default: plain
#
# Scenarios: plain (implemented); jwt_memory, jwt_redis, token_issuance, introspection (TODO hooks below).
#
# Environment (defaults in brackets):
#   DURATION [10s]  length of each measured wrk run      WARMUP [10s]  warm-up per target
#   ROUNDS [3]      alternations direct/nginx/tollgate   CONNECTIONS [64]  wrk connections
#   WRK_THREADS [1] wrk threads                          LOAD_CORE [0] PROXY_CORE [1]
#   RSS_CONNECTIONS [1000] RSS_DURATION [20s]  the RSS step (keep-alive connections, length)
#   OHA_DURATION [10s]  latency step, only when `oha` is installed
#   IDLE_MAX_WAIT [300] IDLE_BUSY_PCT [15]  before each run, wait until other work uses ≤ 15% of the machine
#   SKIP_BUILD [0]  use the existing target/release/tollgate   KEEP_WORKDIR [0]  keep the temp dir
#   OUT_DIR [target/bench-load/<timestamp>]  where results.tsv, report.md and raw outputs are copied
#
# Every process it starts is pinned with taskset: the proxy under test (nginx or tollgate) to PROXY_CORE,
# wrk and the upstream nginx to LOAD_CORE. Ports are picked free at run time. Nothing is left running.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
LIB="$HERE/benchlib.py"

DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-10s}"
ROUNDS="${ROUNDS:-3}"
CONNECTIONS="${CONNECTIONS:-64}"
WRK_THREADS="${WRK_THREADS:-1}"
LOAD_CORE="${LOAD_CORE:-0}"
PROXY_CORE="${PROXY_CORE:-1}"
RSS_CONNECTIONS="${RSS_CONNECTIONS:-1000}"
RSS_DURATION="${RSS_DURATION:-20s}"
OHA_DURATION="${OHA_DURATION:-10s}"
IDLE_MAX_WAIT="${IDLE_MAX_WAIT:-300}"
IDLE_BUSY_PCT="${IDLE_BUSY_PCT:-15}"
SKIP_BUILD="${SKIP_BUILD:-0}"
KEEP_WORKDIR="${KEEP_WORKDIR:-0}"
OUT_DIR="${OUT_DIR:-$ROOT/target/bench-load/$(date +%Y%m%d-%H%M%S)}"

log() { printf '== %s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# ------------------------------------------------------------------------------------------------
# Setup: packages, build, work dir, process bookkeeping

install_deps() {
  local need=()
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
  command -v wrk >/dev/null 2>&1 || need+=(wrk)
  command -v taskset >/dev/null 2>&1 || need+=(util-linux)
  command -v curl >/dev/null 2>&1 || need+=(curl)
  [ ${#need[@]} -eq 0 ] && return 0
  local sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  # Debian's nginx package is `nginx` (bookworm also has the smaller `nginx-light`, gone in trixie).
  local policy
  policy="$(apt-cache policy nginx 2>/dev/null || true)"
  if [[ " ${need[*]} " == *" nginx "* ]] && ! [[ "$policy" =~ Candidate:\ [0-9] ]]; then
    need=("${need[@]/nginx/nginx-light}")
  fi
  log "installing: ${need[*]}"
  # Keep the package's post-install from starting a system nginx on port 80: we start our own.
  local guard=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    guard=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' | $sudo_cmd tee "$guard" >/dev/null
    $sudo_cmd chmod 755 "$guard"
  fi
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}" >/dev/null || {
    [ -n "$guard" ] && $sudo_cmd rm -f "$guard"
    die "apt-get install ${need[*]} failed"
  }
  [ -n "$guard" ] && $sudo_cmd rm -f "$guard"
  return 0
}

NGINX_BIN=""
TOLLGATE_BIN=""

build_tollgate() {
  local target_dir="${CARGO_TARGET_DIR:-$ROOT/target}"
  TOLLGATE_BIN="$target_dir/release/tollgate"
  if [ "$SKIP_BUILD" != 1 ]; then
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release)
  fi
  [ -x "$TOLLGATE_BIN" ] || die "$TOLLGATE_BIN not found"
}

WORK=""
STARTED_PIDS=()

cleanup() {
  local pid
  for pid in "${STARTED_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${STARTED_PIDS[@]}"; do
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then
    if [ "$KEEP_WORKDIR" = 1 ]; then
      log "work dir kept: $WORK"
    else
      rm -rf "$WORK"
    fi
  fi
}

stop_pid() {
  local pid="$1" kept=()
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for p in "${STARTED_PIDS[@]}"; do [ "$p" = "$pid" ] || kept+=("$p"); done
  STARTED_PIDS=("${kept[@]}")
}

freeport() { python3 "$LIB" freeport; }

# Targets of a comparison: name → URL, and name → PID whose CPU is charged to it (empty: not measured).
declare -A TARGET_URL=()
declare -A TARGET_PID=()

# ------------------------------------------------------------------------------------------------
# Servers

UPSTREAM_PORT=""
UPSTREAM_PID=""

start_upstream() {
  local dir="$WORK/upstream" body
  mkdir -p "$dir/tmp"
  UPSTREAM_PORT="$(freeport)"
  body="$(python3 -c 'print("u" * 199)')" # 199 characters + "\n" = 200 bytes
  cat >"$dir/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 65536;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:$UPSTREAM_PORT;
        location / {
            default_type text/plain;
            return 200 "$body\n";
        }
    }
}
EOF
  taskset -c "$LOAD_CORE" "$NGINX_BIN" -p "$dir/" -e "$dir/error.log" -c "$dir/nginx.conf" \
    >"$dir/stdout.log" 2>&1 &
  UPSTREAM_PID=$!
  STARTED_PIDS+=("$UPSTREAM_PID")
  python3 "$LIB" wait-http "http://127.0.0.1:$UPSTREAM_PORT/" || {
    cat "$dir/error.log" >&2
    die "upstream nginx did not start"
  }
  local size
  size="$(curl -s -o /dev/null -w '%{size_download}' "http://127.0.0.1:$UPSTREAM_PORT/")"
  [ "$size" = 200 ] || die "upstream body is $size bytes, expected 200"
  TARGET_URL[direct]="http://127.0.0.1:$UPSTREAM_PORT/"
  TARGET_PID[direct]=""
  log "upstream nginx: pid $UPSTREAM_PID, port $UPSTREAM_PORT, core $LOAD_CORE"
}

start_nginx_proxy() {
  local dir="$WORK/nginx-proxy" port pid
  mkdir -p "$dir/tmp"
  port="$(freeport)"
  cat >"$dir/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 65536;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    upstream bench_upstream {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 64;
        keepalive_requests 10000000;
    }
    server {
        listen 127.0.0.1:$port;
        location /bench/ {
            proxy_pass http://bench_upstream/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
  taskset -c "$PROXY_CORE" "$NGINX_BIN" -p "$dir/" -e "$dir/error.log" -c "$dir/nginx.conf" \
    >"$dir/stdout.log" 2>&1 &
  pid=$!
  STARTED_PIDS+=("$pid")
  python3 "$LIB" wait-http "http://127.0.0.1:$port/bench/" || {
    cat "$dir/error.log" >&2
    die "nginx reverse proxy did not start"
  }
  TARGET_URL[nginx]="http://127.0.0.1:$port/bench/"
  TARGET_PID[nginx]="$pid"
  log "nginx reverse proxy: pid $pid, port $port, core $PROXY_CORE"
}

# start_tollgate NAME DIR: DIR holds gateway.yaml (its `listen` is replaced by a free port) and
# api-definitions/. Sets TARGET_URL[NAME] (…/bench/) and TARGET_PID[NAME].
start_tollgate() {
  local name="$1" dir="$2" port pid
  port="$(freeport)"
  sed -i "s|^listen: .*|listen: 127.0.0.1:$port|" "$dir/gateway.yaml"
  "$TOLLGATE_BIN" check --config "$dir/gateway.yaml" >&2 || die "tollgate check failed for $dir"
  taskset -c "$PROXY_CORE" "$TOLLGATE_BIN" run --config "$dir/gateway.yaml" >"$dir/stdout.log" 2>"$dir/stderr.log" &
  pid=$!
  STARTED_PIDS+=("$pid")
  python3 "$LIB" wait-http "http://127.0.0.1:$port/health" || {
    cat "$dir/stderr.log" >&2
    die "tollgate ($name) did not start"
  }
  TARGET_URL[$name]="http://127.0.0.1:$port/bench/"
  TARGET_PID[$name]="$pid"
  log "tollgate ($name): pid $pid, port $port, core $PROXY_CORE, config $dir/gateway.yaml"
}

# Writes a gateway for scenario "plain": one API /bench/ with auth none, in front of the upstream.
write_tollgate_plain_config() {
  local dir="$1"
  mkdir -p "$dir/api-definitions" "$dir/keys"
  cat >"$dir/gateway.yaml" <<EOF
listen: 127.0.0.1:0
api_definitions: api-definitions
storage:
  backend: memory
signing:
  algorithm: ES256
  key_file: keys/signing.pem
  generate: true
log:
  level: warn
  format: text
EOF
  cat >"$dir/api-definitions/bench.yaml" <<EOF
id: bench
listen_path: /bench/
strip_listen_path: true
upstream:
  url: http://127.0.0.1:$UPSTREAM_PORT
auth:
  type: none
EOF
}

# ------------------------------------------------------------------------------------------------
# Measurement

RESULTS=""
WRK_ARGS=() # extra wrk arguments of the current scenario (e.g. -H "Authorization: Bearer …")

run_wrk() { # run_wrk OUTFILE CONNECTIONS DURATION URL
  taskset -c "$LOAD_CORE" wrk -t"$WRK_THREADS" -c"$2" -d"$3" ${WRK_ARGS[@]+"${WRK_ARGS[@]}"} "$4" >"$1" 2>&1 || true
}

run_wrk_timed() { # as run_wrk, printing wrk's CPU time in clock ticks
  python3 "$LIB" timed "$1" taskset -c "$LOAD_CORE" wrk -t"$WRK_THREADS" -c"$2" -d"$3" \
    ${WRK_ARGS[@]+"${WRK_ARGS[@]}"} "$4"
}

# The machine is shared: before each measured run (our servers idle), wait until the rest of the
# machine is quiet, at most IDLE_MAX_WAIT seconds. Runs that still overlapped other work show it in the
# "other work" column.
wait_idle() {
  local busy
  busy="$(python3 "$LIB" wait-idle "$IDLE_MAX_WAIT" "$IDLE_BUSY_PCT")"
  if [ "$busy" -gt "$IDLE_BUSY_PCT" ]; then
    log "warning: machine still ${busy}% busy after waiting ${IDLE_MAX_WAIT}s; measuring anyway"
    echo "- a run started while the machine was ${busy}% busy with other work (waited ${IDLE_MAX_WAIT}s)" >>"$WORK/notes.md"
  fi
}

# compare SCENARIO TARGET...: warm-up of each target, then ROUNDS alternations, rows into RESULTS.
compare() {
  local scenario="$1" target round out before after wrk_ticks
  shift
  for target in "$@"; do
    log "$scenario: warm-up $target ($WARMUP, ${CONNECTIONS} connections)"
    out="$WORK/raw/$scenario-$target-warmup.txt"
    run_wrk "$out" "$CONNECTIONS" "$WARMUP" "${TARGET_URL[$target]}"
    if grep -q 'Non-2xx\|Socket errors' "$out"; then
      log "warning: warm-up of $target had errors:"
      grep 'Non-2xx\|Socket errors' "$out" >&2
    fi
  done
  for round in $(seq "$ROUNDS"); do
    for target in "$@"; do
      out="$WORK/raw/$scenario-$target-$round.txt"
      wait_idle
      before="$(python3 "$LIB" snapshot "${TARGET_PID[$target]:--}" "$UPSTREAM_PID")"
      wrk_ticks="$(run_wrk_timed "$out" "$CONNECTIONS" "$DURATION" "${TARGET_URL[$target]}")"
      after="$(python3 "$LIB" snapshot "${TARGET_PID[$target]:--}" "$UPSTREAM_PID")"
      python3 "$LIB" record "$RESULTS" "$scenario" "$target" "$round" "$before" "$after" "$wrk_ticks" "$out" >&2 || {
        cat "$out" >&2
        die "could not parse wrk output of $scenario/$target round $round"
      }
    done
  done
}

rss_line() { # rss_line LABEL PID
  local rss hwm fds
  read -r rss hwm fds < <(python3 "$LIB" rss "$2")
  awk -v l="$1" -v r="$rss" -v h="$hwm" -v f="$fds" \
    'BEGIN { printf "- %s: VmRSS %.1f MiB (main process peak VmHWM %.1f MiB), %d open fds\n", l, r / 1024, h / 1024, f }'
}

# RSS of tollgate (and nginx for reference) after RSS_DURATION of load over RSS_CONNECTIONS keep-alive
# connections (BENCHMARKS.md target: ≤ 64 MiB after 100k requests over 1,000 connections).
rss_step() {
  local target="$1" out requests
  out="$WORK/raw/rss-$target.txt"
  run_wrk "$out" "$RSS_CONNECTIONS" "$RSS_DURATION" "${TARGET_URL[$target]}"
  requests="$(grep -oE '^\s*[0-9]+ requests in' "$out" | grep -oE '[0-9]+' || echo '?')"
  {
    printf -- '- %s: %s requests over %s connections in %s' "$target" "$requests" "$RSS_CONNECTIONS" "$RSS_DURATION"
    if [[ "$requests" =~ ^[0-9]+$ ]] && [ "$requests" -lt 100000 ]; then
      printf ' (fewer than the 100k of the target: raise RSS_DURATION)'
    fi
    { grep -E 'Non-2xx|Socket errors' "$out" || true; } | sed 's/^ */; /' | tr -d '\n'
    echo
    rss_line "$target after it" "${TARGET_PID[$target]}"
  } >>"$WORK/rss.md"
}

# Latency at a fixed rate (half of nginx's median maximum) with oha, when it is installed.
latency_step() {
  local scenario="$1" rate target out files=()
  shift
  if ! command -v oha >/dev/null 2>&1; then
    echo "- latency ($scenario): not measured: \`oha\` is not installed (\`cargo install oha\`; this script does not install it)" >>"$WORK/latency.md"
    return 0
  fi
  rate="$(python3 "$LIB" median-rps "$RESULTS" "$scenario" nginx)"
  if [ "$rate" -le 0 ]; then
    echo "- latency ($scenario): not measured: no valid nginx run to take the rate from" >>"$WORK/latency.md"
    return 0
  fi
  rate=$((rate / 2))
  log "$scenario: latency with oha at $rate req/s"
  for target in "$@"; do
    out="$WORK/raw/oha-$scenario-$target.txt"
    taskset -c "$LOAD_CORE" oha --no-tui -z "$OHA_DURATION" -c "$CONNECTIONS" -q "$rate" --latency-correction \
      ${WRK_ARGS[@]+"${WRK_ARGS[@]}"} "${TARGET_URL[$target]}" >"$out" 2>&1 || true
    files+=("$target=$out")
  done
  {
    echo
    echo "Latency ($scenario): oha at $rate req/s (half of nginx's median), $CONNECTIONS connections, $OHA_DURATION, latency correction."
    python3 "$LIB" latency-table "${files[@]}"
  } >>"$WORK/latency.md"
}

# ------------------------------------------------------------------------------------------------
# Scenarios

scenario_plain() {
  local dir="$WORK/tollgate-plain" pid
  write_tollgate_plain_config "$dir"
  start_tollgate tollgate "$dir"
  pid="${TARGET_PID[tollgate]}"
  WRK_ARGS=()
  compare plain direct nginx tollgate
  rss_line "tollgate after the plain runs" "$pid" >>"$WORK/rss.md"
  rss_line "nginx (master + worker) after the plain runs" "${TARGET_PID[nginx]}" >>"$WORK/rss.md"
  latency_step plain direct nginx tollgate
  log "RSS step: $RSS_CONNECTIONS connections for $RSS_DURATION on tollgate and nginx"
  rss_step tollgate
  rss_step nginx
  if grep -qiE ' (WARN|ERROR) ' "$dir/stderr.log"; then
    {
      echo "- tollgate logged $(grep -ciE ' (WARN|ERROR) ' "$dir/stderr.log") warn/error lines; first ones:"
      grep -iE ' (WARN|ERROR) ' "$dir/stderr.log" | head -5 | sed 's/^/    /'
    } >>"$WORK/notes.md"
  fi
  kill -0 "$pid" 2>/dev/null || echo "- tollgate (plain) exited during the benchmark" >>"$WORK/notes.md"
  stop_pid "$pid"
}

# TODO(scenario): JWT auth (ES256 access token from the gateway) + session rate limit + quota, memory
# store. Needs: an API with auth oauth2 and a client_credentials client, a token fetched before the runs,
# WRK_ARGS=(-H "Authorization: Bearer $token"), limits high enough never to answer 429, then
# `compare jwt_memory direct nginx tollgate` (nginx stays the plain-proxy reference).
scenario_jwt_memory() { log "TODO: scenario jwt_memory is not implemented yet"; }

# TODO(scenario): as jwt_memory with `storage.backend: redis` (a redis-server started on a free port,
# pinned to LOAD_CORE); also count Redis commands per request (INFO commandstats before/after).
scenario_jwt_redis() { log "TODO: scenario jwt_redis is not implemented yet"; }

# TODO(scenario): client_credentials token issuance (ES256, argon2id secret) in tokens/s: wrk with a
# POST script (-s) against /bench/oauth/token.
scenario_token_issuance() { log "TODO: scenario token_issuance is not implemented yet"; }

# TODO(scenario): RFC 7662 introspection calls/s: wrk POST script against /bench/oauth/introspect.
scenario_introspection() { log "TODO: scenario introspection is not implemented yet"; }

# ------------------------------------------------------------------------------------------------

main() {
  local scenarios=("$@") s
  [ ${#scenarios[@]} -eq 0 ] && scenarios=(plain)
  for s in "${scenarios[@]}"; do
    declare -F "scenario_$s" >/dev/null || die "unknown scenario '$s'"
  done
  [ "$(nproc --all)" -ge 2 ] || die "needs at least 2 cores"

  install_deps
  NGINX_BIN="$(command -v nginx || echo /usr/sbin/nginx)"
  build_tollgate
  ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

  WORK="$(mktemp -d /tmp/tollgate-bench.XXXXXX)"
  chmod 755 "$WORK" # nginx workers run as an unprivileged user
  mkdir -p "$WORK/raw"
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  RESULTS="$WORK/results.tsv"
  : >"$WORK/rss.md" >"$WORK/latency.md" >"$WORK/notes.md"

  start_upstream
  start_nginx_proxy
  for s in "${scenarios[@]}"; do
    "scenario_$s"
  done

  mkdir -p "$OUT_DIR"
  {
    echo "# tollgate load comparison, $(date -u +'%Y-%m-%d %H:%M UTC')"
    echo
    echo "- machine: $(nproc --all) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(uname -r), load average before: $LOADAVG_BEFORE"
    echo "- $("$NGINX_BIN" -v 2>&1), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), $(rustc --version)"
    echo "- wrk -t$WRK_THREADS -c$CONNECTIONS, warm-up $WARMUP per target, $ROUNDS × $DURATION alternated; proxy on core $PROXY_CORE, wrk + upstream on core $LOAD_CORE"
    echo "- CPU per request: utime+stime of the proxy process (nginx: master + worker) over the run ÷ requests"
    [ -s "$RESULTS" ] && python3 "$LIB" report "$RESULTS"
    echo
    echo "Memory:"
    echo
    cat "$WORK/rss.md"
    if [ -s "$WORK/latency.md" ]; then
      echo
      cat "$WORK/latency.md"
    fi
    if [ -s "$WORK/notes.md" ]; then
      echo
      echo "Notes:"
      echo
      cat "$WORK/notes.md"
    fi
  } | tee "$OUT_DIR/report.md"
  cp -r "$RESULTS" "$WORK/raw" "$OUT_DIR/" 2>/dev/null || true
  log "results in $OUT_DIR"
}

LOADAVG_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
main "$@"
