#!/usr/bin/env bash
# Load comparison of tollgate with Debian's nginx, the floor (a minimal hyper reverse proxy on the
# same hyper/hyper-util: benches/load/floor_proxy.rs), HAProxy and Caddy as peers, and a direct
# upstream, all in one run (method: shared/BENCHMARKS.md, results: docs/benchmarks.md). Every scenario
# is reported as ratios to nginx and to the floor.
#
#   benches/load/run.sh [SCENARIO...]      default: plain
#
# Scenarios: plain (auth none), two_targets (plain over one target against two, round robin), jwt_memory (ES256 token + session rate limit + quota, memory store),
# jwt_redis (the same with the Redis store; also Redis commands and round trips per request),
# token_issuance (client_credentials tokens/s), introspection (RFC 7662 calls/s); `all` runs every one.
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
#   PEERS [haproxy caddy]  peers measured in the plain scenario (Debian packages, installed when
#                    missing; HAProxy nbthread 1 + http-reuse always, Caddy GOMAXPROCS=1); PEERS= skips them
#   BASELINE_BIN []  another tollgate binary (e.g. a build of the previous commit) measured as target
#                    `baseline` next to `tollgate` in every scenario, for before/after in one run
#
# Every process it starts is pinned with taskset: the proxy under test (nginx, the floor, a peer or tollgate) to PROXY_CORE,
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
PEERS="${PEERS-haproxy caddy}"

log() { printf '== %s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# ------------------------------------------------------------------------------------------------
# Setup: packages, build, work dir, process bookkeeping

NEED_REDIS=0 # set by main when a scenario needs redis-server

install_deps() {
  local need=()
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
  command -v wrk >/dev/null 2>&1 || need+=(wrk)
  command -v taskset >/dev/null 2>&1 || need+=(util-linux)
  command -v curl >/dev/null 2>&1 || need+=(curl)
  local peer
  for peer in $PEERS; do
    case "$peer" in
      haproxy) command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy) ;;
      caddy) command -v caddy >/dev/null 2>&1 || need+=(caddy) ;;
      *) die "unknown peer '$peer' (PEERS: haproxy caddy)" ;;
    esac
  done
  if [ "$NEED_REDIS" = 1 ]; then
    command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
    command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
  fi
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
  # Keep the packages' post-install from starting a system nginx, HAProxy or Caddy: we start our own.
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
FLOOR_BIN=""
BASELINE_BIN="${BASELINE_BIN:-}"

build_tollgate() {
  local target_dir="${CARGO_TARGET_DIR:-$ROOT/target}"
  TOLLGATE_BIN="$target_dir/release/tollgate"
  FLOOR_BIN="$target_dir/release/examples/floor_proxy"
  if [ "$SKIP_BUILD" != 1 ]; then
    log "cargo build --release (tollgate and the floor)"
    (cd "$ROOT" && cargo build --release --bin tollgate --example floor_proxy)
  fi
  [ -x "$TOLLGATE_BIN" ] || die "$TOLLGATE_BIN not found"
  [ -x "$FLOOR_BIN" ] || die "$FLOOR_BIN not found (cargo build --release --example floor_proxy)"
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
UPSTREAM_PORT2=""
UPSTREAM_PID=""

start_upstream() {
  local dir="$WORK/upstream" body
  mkdir -p "$dir/tmp"
  UPSTREAM_PORT="$(freeport)"
  UPSTREAM_PORT2="$(freeport)" # the same server on a second port: a second target (scenario two_targets)
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
        listen 127.0.0.1:$UPSTREAM_PORT2;
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

# The floor: benches/load/floor_proxy.rs, the same hyper/hyper-util as tollgate and nothing else.
start_floor() {
  local dir="$WORK/floor" port pid
  mkdir -p "$dir"
  port="$(freeport)"
  taskset -c "$PROXY_CORE" "$FLOOR_BIN" "127.0.0.1:$port" "127.0.0.1:$UPSTREAM_PORT" /bench \
    >"$dir/stdout.log" 2>&1 &
  pid=$!
  STARTED_PIDS+=("$pid")
  python3 "$LIB" wait-http "http://127.0.0.1:$port/bench/" || {
    cat "$dir/stdout.log" >&2
    die "the floor proxy did not start"
  }
  TARGET_URL[floor]="http://127.0.0.1:$port/bench/"
  TARGET_PID[floor]="$pid"
  log "floor (minimal hyper proxy): pid $pid, port $port, core $PROXY_CORE"
}

# HAProxy as BENCHMARKS.md has it: one thread, upstream connections reused (`http-reuse always`).
start_haproxy() {
  local dir="$WORK/haproxy" port pid bin
  bin="$(command -v haproxy || echo /usr/sbin/haproxy)"
  mkdir -p "$dir"
  port="$(freeport)"
  cat >"$dir/haproxy.cfg" <<EOF
global
    nbthread 1
    # Well above wrk's connections; HAProxy needs about 2 fds per connection under the fd limit.
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    http-reuse always
frontend bench
    bind 127.0.0.1:$port
    default_backend upstream
backend upstream
    http-request set-path %[path,regsub(^/bench/,/)]
    server upstream 127.0.0.1:$UPSTREAM_PORT
EOF
  # -db: foreground, one process (the PID whose CPU is charged).
  taskset -c "$PROXY_CORE" "$bin" -db -f "$dir/haproxy.cfg" >"$dir/stdout.log" 2>&1 &
  pid=$!
  STARTED_PIDS+=("$pid")
  python3 "$LIB" wait-http "http://127.0.0.1:$port/bench/" || {
    cat "$dir/stdout.log" >&2
    die "haproxy did not start"
  }
  TARGET_URL[haproxy]="http://127.0.0.1:$port/bench/"
  TARGET_PID[haproxy]="$pid"
  log "haproxy ($("$bin" -v 2>&1 | head -1 | cut -d' ' -f1-3)): pid $pid, port $port, core $PROXY_CORE"
}

# Caddy (Go) with one OS thread running Go code (GOMAXPROCS=1), no admin endpoint, no TLS.
start_caddy() {
  local dir="$WORK/caddy" port pid
  mkdir -p "$dir"
  port="$(freeport)"
  cat >"$dir/Caddyfile" <<EOF
{
    admin off
    auto_https off
}
http://127.0.0.1:$port {
    handle_path /bench/* {
        reverse_proxy 127.0.0.1:$UPSTREAM_PORT
    }
}
EOF
  GOMAXPROCS=1 HOME="$dir" XDG_DATA_HOME="$dir/data" XDG_CONFIG_HOME="$dir/config" \
    taskset -c "$PROXY_CORE" caddy run --adapter caddyfile --config "$dir/Caddyfile" >"$dir/stdout.log" 2>&1 &
  pid=$!
  STARTED_PIDS+=("$pid")
  python3 "$LIB" wait-http "http://127.0.0.1:$port/bench/" || {
    cat "$dir/stdout.log" >&2
    die "caddy did not start"
  }
  TARGET_URL[caddy]="http://127.0.0.1:$port/bench/"
  TARGET_PID[caddy]="$pid"
  log "caddy ($(caddy version 2>/dev/null | cut -d' ' -f1)): pid $pid, port $port, core $PROXY_CORE"
}

# start_tollgate NAME DIR [BINARY]: DIR holds gateway.yaml (its `listen` is replaced by a free port) and
# api-definitions/. Sets TARGET_URL[NAME] (…/bench/) and TARGET_PID[NAME].
start_tollgate() {
  local name="$1" dir="$2" bin="${3:-$TOLLGATE_BIN}" port pid
  port="$(freeport)"
  sed -i "s|^listen: .*|listen: 127.0.0.1:$port|" "$dir/gateway.yaml"
  # All load comes from one address (wrk on 127.0.0.1), up to RSS_CONNECTIONS connections at once: lift
  # the per-address connection cap where the binary has it. An older binary (BASELINE_BIN) refuses the
  # field, so it is dropped again there.
  if ! grep -q '^limits:' "$dir/gateway.yaml"; then
    cp "$dir/gateway.yaml" "$dir/gateway.yaml.orig"
    printf 'limits:\n  max_connections_per_ip: 100000\n' >>"$dir/gateway.yaml"
    "$bin" check --config "$dir/gateway.yaml" >/dev/null 2>&1 || cp "$dir/gateway.yaml.orig" "$dir/gateway.yaml"
  fi
  "$bin" check --config "$dir/gateway.yaml" >&2 || die "tollgate check failed for $dir"
  taskset -c "$PROXY_CORE" "$bin" run --config "$dir/gateway.yaml" >"$dir/stdout.log" 2>"$dir/stderr.log" &
  pid=$!
  STARTED_PIDS+=("$pid")
  python3 "$LIB" wait-http "http://127.0.0.1:$port/health" || {
    cat "$dir/stderr.log" >&2
    die "tollgate ($name) did not start"
  }
  TARGET_URL[$name]="http://127.0.0.1:$port/bench/"
  TARGET_PID[$name]="$pid"
  log "tollgate ($name): pid $pid, port $port, core $PROXY_CORE, config $dir/gateway.yaml, $bin"
}

TOLLGATES=() # the tollgate targets of the current scenario: tollgate, and baseline with BASELINE_BIN

# start_tollgates DIR: `tollgate` from DIR and, with BASELINE_BIN, `baseline` from a copy of DIR made
# after the first start, so both sign and accept tokens with the same key.
start_tollgates() {
  local dir="$1"
  start_tollgate tollgate "$dir"
  TOLLGATES=(tollgate)
  if [ -n "$BASELINE_BIN" ]; then
    rm -rf "$dir-baseline"
    cp -r "$dir" "$dir-baseline"
    rm -f "$dir-baseline"/*.log
    start_tollgate baseline "$dir-baseline" "$BASELINE_BIN"
    TOLLGATES+=(baseline)
  fi
}

# Appends SUFFIX (e.g. oauth/token) to the URL of every tollgate target.
tollgate_urls_suffix() {
  local t
  for t in "${TOLLGATES[@]}"; do TARGET_URL[$t]="${TARGET_URL[$t]}$1"; done
}

# Notes on every tollgate target of the scenario (warnings it logged, whether it survived), then stops it.
stop_tollgates() { # stop_tollgates SCENARIO DIR
  local t dir
  for t in "${TOLLGATES[@]}"; do
    dir="$2"
    [ "$t" = baseline ] && dir="$2-baseline"
    tollgate_notes "$1/$t" "$dir" "${TARGET_PID[$t]}"
    stop_pid "${TARGET_PID[$t]}"
  done
  TOLLGATES=()
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
WRK_ARGS=()    # extra wrk arguments of the current scenario (e.g. -H "Authorization: Bearer …")
AFTER_WARMUP=() # a command `compare` runs once the warm-ups are done (e.g. a counter snapshot)

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
  if [ ${#AFTER_WARMUP[@]} -gt 0 ]; then "${AFTER_WARMUP[@]}"; fi
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
  local dir="$WORK/tollgate-plain" t
  write_tollgate_plain_config "$dir"
  start_tollgates "$dir"
  WRK_ARGS=()
  local peer peers=()
  for peer in $PEERS; do
    "start_$peer"
    peers+=("$peer")
  done
  compare plain direct nginx floor ${peers[@]+"${peers[@]}"} "${TOLLGATES[@]}"
  for t in "${TOLLGATES[@]}"; do
    rss_line "$t after the plain runs" "${TARGET_PID[$t]}" >>"$WORK/rss.md"
  done
  rss_line "nginx (master + worker) after the plain runs" "${TARGET_PID[nginx]}" >>"$WORK/rss.md"
  rss_line "the floor after the plain runs" "${TARGET_PID[floor]}" >>"$WORK/rss.md"
  latency_step plain direct nginx floor ${peers[@]+"${peers[@]}"} "${TOLLGATES[@]}"
  log "RSS step: $RSS_CONNECTIONS connections for $RSS_DURATION on ${TOLLGATES[*]} and nginx"
  for t in "${TOLLGATES[@]}"; do rss_step "$t"; done
  rss_step nginx
  stop_tollgates plain "$dir"
  for peer in ${peers[@]+"${peers[@]}"}; do stop_pid "${TARGET_PID[$peer]}"; done
}

# Issue 11: the plain path over two targets with round robin against the same gateway over one (the
# same upstream nginx on two ports, so only the balancing differs). Target: CPU per request within 5 %.
scenario_two_targets() {
  local one="$WORK/tollgate-one-target" two="$WORK/tollgate-two-targets"
  write_tollgate_plain_config "$one"
  write_tollgate_plain_config "$two"
  cat >"$two/api-definitions/bench.yaml" <<EOF
id: bench
listen_path: /bench/
strip_listen_path: true
upstream:
  targets:
    - { url: "http://127.0.0.1:$UPSTREAM_PORT" }
    - { url: "http://127.0.0.1:$UPSTREAM_PORT2" }
  balance: round_robin
auth:
  type: none
EOF
  start_tollgate one_target "$one"
  start_tollgate two_targets "$two"
  TOLLGATES=(one_target two_targets)
  WRK_ARGS=()
  compare two_targets nginx one_target two_targets
  stop_pid "${TARGET_PID[one_target]}"
  stop_pid "${TARGET_PID[two_targets]}"
  TOLLGATES=()
}

# The OAuth scenarios share one client: a confidential client_credentials client of the API /bench/
# with an argon2id secret (hashed by `tollgate hash-secret`, as an operator would).
BENCH_CLIENT_ID="bench-client"
BENCH_CLIENT_SECRET="bench-secret-$RANDOM$RANDOM"
BENCH_SECRET_HASH=""

bench_secret_hash() {
  if [ -z "$BENCH_SECRET_HASH" ]; then
    BENCH_SECRET_HASH="$(printf '%s' "$BENCH_CLIENT_SECRET" | "$TOLLGATE_BIN" hash-secret)" ||
      die "tollgate hash-secret failed"
  fi
  printf '%s' "$BENCH_SECRET_HASH"
}

# RFC 6749 §2.3.1: id and secret are form-urlencoded before base64; ours need no escaping.
bench_basic() { printf '%s:%s' "$BENCH_CLIENT_ID" "$BENCH_CLIENT_SECRET" | base64 -w0; }

# write_tollgate_oauth_config DIR STORAGE_YAML: the API /bench/ protected by ES256 access tokens that
# the gateway issues itself, with a session rate limit and quota far above anything a run can reach
# (a 429 would void the run), in front of the upstream.
write_tollgate_oauth_config() {
  local dir="$1" storage="$2" hash
  hash="$(bench_secret_hash)"
  mkdir -p "$dir/api-definitions" "$dir/keys"
  # A fixed public_url (the issuer) rather than the default http://<listen>, so that a baseline target
  # on another port accepts the same tokens.
  cat >"$dir/gateway.yaml" <<EOF
listen: 127.0.0.1:0
public_url: http://tollgate.bench
api_definitions: api-definitions
storage:
$storage
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
  type: oauth2
  required_scopes: [read]
oauth:
  grant_types: [client_credentials]
  access_token: { ttl: 12h }
  scopes: [read]
  clients:
    - client_id: $BENCH_CLIENT_ID
      secret_hash: "$hash"
      grant_types: [client_credentials]
      scopes: [read]
rate_limit: { rate: 100000000, per: 1s }
quota: { max: 1000000000000, period: 30d }
EOF
}

# fetch_token BASE_URL: one client_credentials access token from BASE_URL (…/bench/) on stdout.
fetch_token() {
  local body
  body="$(curl -sS --fail-with-body -u "$BENCH_CLIENT_ID:$BENCH_CLIENT_SECRET" \
    -d grant_type=client_credentials "${1}oauth/token")" || die "token request failed: $body"
  python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])' <<<"$body" ||
    die "no access_token in: $body"
}

# One wrk Lua script per POST scenario: a fixed form body and HTTP Basic client authentication.
write_post_script() { # write_post_script FILE BODY
  cat >"$1" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic $(bench_basic)"
wrk.body = "$2"
EOF
}

# Warnings and errors tollgate logged go into the notes, and whether it survived the runs.
tollgate_notes() { # tollgate_notes NAME DIR PID
  if grep -qiE ' (WARN|ERROR) ' "$2/stderr.log"; then
    {
      echo "- tollgate ($1) logged $(grep -ciE ' (WARN|ERROR) ' "$2/stderr.log") warn/error lines; first ones:"
      grep -iE ' (WARN|ERROR) ' "$2/stderr.log" | head -5 | sed 's/^/    /'
    } >>"$WORK/notes.md"
  fi
  kill -0 "$3" 2>/dev/null || echo "- tollgate ($1) exited during the benchmark" >>"$WORK/notes.md"
}

# JWT auth (ES256 access token from the gateway) + session rate limit + quota, memory store. nginx stays
# the plain-proxy reference (it gets the same Authorization header and ignores it).
scenario_jwt_memory() {
  local dir="$WORK/tollgate-jwt-memory" token t
  write_tollgate_oauth_config "$dir" "  backend: memory"
  start_tollgates "$dir"
  token="$(fetch_token "${TARGET_URL[tollgate]}")"
  WRK_ARGS=(-H "Authorization: Bearer $token")
  compare jwt_memory direct nginx floor "${TOLLGATES[@]}"
  for t in "${TOLLGATES[@]}"; do
    rss_line "$t (jwt_memory) after its runs" "${TARGET_PID[$t]}" >>"$WORK/rss.md"
  done
  WRK_ARGS=()
  stop_tollgates jwt_memory "$dir"
}

REDIS_PORT=""
REDIS_PID=""

# A private redis-server on a free port (never 6379, never a server that was already running), without
# persistence, pinned with the upstream and wrk so that it does not share the proxy's core.
start_redis() {
  local dir="$WORK/redis"
  command -v redis-server >/dev/null 2>&1 || die "redis-server is not installed (apt-get install redis-server)"
  mkdir -p "$dir"
  REDIS_PORT="$(freeport)"
  while [ "$REDIS_PORT" = 6379 ]; do REDIS_PORT="$(freeport)"; done
  taskset -c "$LOAD_CORE" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$dir" --daemonize no --loglevel warning >"$dir/stdout.log" 2>&1 &
  REDIS_PID=$!
  STARTED_PIDS+=("$REDIS_PID")
  for _ in $(seq 50); do
    redis-cli -p "$REDIS_PORT" PING 2>/dev/null | grep -q PONG && break
    sleep 0.1
  done
  redis-cli -p "$REDIS_PORT" PING 2>/dev/null | grep -q PONG || {
    cat "$dir/stdout.log" >&2
    die "redis-server did not start"
  }
  log "redis-server: pid $REDIS_PID, port $REDIS_PORT, core $LOAD_CORE"
}

# Round trips per proxied request, exactly: MONITOR lists every command a client sent and marks the
# commands that Lua scripts ran with "[… lua]", which are not round trips. A short extra run outside
# the measured ones (MONITOR slows Redis down).
redis_roundtrips_step() { # redis_roundtrips_step TARGET
  local mon="$WORK/raw/redis-monitor.txt" out="$WORK/raw/redis-monitor-wrk.txt" monpid
  taskset -c "$LOAD_CORE" redis-cli -p "$REDIS_PORT" MONITOR >"$mon" 2>&1 &
  monpid=$!
  sleep 0.5
  run_wrk "$out" "$CONNECTIONS" 3s "${TARGET_URL[$1]}"
  sleep 0.5
  kill "$monpid" 2>/dev/null || true
  wait "$monpid" 2>/dev/null || true
  python3 "$LIB" roundtrips "$mon" "$out" >>"$WORK/redis.md"
}

# As jwt_memory with `storage.backend: redis`; also counts Redis commands per request (INFO
# commandstats before and after the measured runs ÷ the requests tollgate served in them) and round trips.
scenario_jwt_redis() {
  local dir="$WORK/tollgate-jwt-redis" token before after t
  start_redis
  write_tollgate_oauth_config "$dir" "  backend: redis
  redis:
    url: redis://127.0.0.1:$REDIS_PORT/0
    key_prefix: \"bench:\""
  start_tollgates "$dir"
  token="$(fetch_token "${TARGET_URL[tollgate]}")"
  WRK_ARGS=(-H "Authorization: Bearer $token")
  before="$WORK/raw/redis-commandstats-before.txt"
  after="$WORK/raw/redis-commandstats-after.txt"
  # The counters must cover exactly the measured runs: `compare` runs this hook after the warm-ups.
  # With a baseline target both gateways share the Redis, so the figure is over both.
  AFTER_WARMUP=(redis_commandstats "$before")
  compare jwt_redis direct nginx floor "${TOLLGATES[@]}"
  AFTER_WARMUP=()
  redis_commandstats "$after"
  python3 "$LIB" commandstats "$RESULTS" jwt_redis "$(IFS=,; echo "${TOLLGATES[*]}")" "$before" "$after" >>"$WORK/redis.md"
  for t in "${TOLLGATES[@]}"; do
    redis_roundtrips_step "$t"
    rss_line "$t (jwt_redis) after its runs" "${TARGET_PID[$t]}" >>"$WORK/rss.md"
  done
  WRK_ARGS=()
  stop_tollgates jwt_redis "$dir"
  stop_pid "$REDIS_PID"
}

redis_commandstats() { redis-cli -p "$REDIS_PORT" INFO commandstats >"$1"; }

# client_credentials token issuance (ES256, argon2id client secret, memory store) in tokens/s: wrk
# POSTs the form with HTTP Basic to /bench/oauth/token. Every token starts a session in the store.
scenario_token_issuance() {
  local dir="$WORK/tollgate-tokens" t
  write_tollgate_oauth_config "$dir" "  backend: memory"
  write_post_script "$dir/token.lua" "grant_type=client_credentials"
  start_tollgates "$dir"
  for t in "${TOLLGATES[@]}"; do fetch_token "${TARGET_URL[$t]}" >/dev/null; done
  tollgate_urls_suffix oauth/token
  WRK_ARGS=(-s "$dir/token.lua")
  compare token_issuance "${TOLLGATES[@]}"
  for t in "${TOLLGATES[@]}"; do
    rss_line "$t (token_issuance) after its runs" "${TARGET_PID[$t]}" >>"$WORK/rss.md"
  done
  WRK_ARGS=()
  stop_tollgates token_issuance "$dir"
}

# RFC 7662 introspection calls/s: wrk POSTs `token=<access token>` with the client's HTTP Basic
# credentials (the caller must be a confidential client of the API, docs/design.md §4) to /bench/oauth/introspect.
scenario_introspection() {
  local dir="$WORK/tollgate-introspect" token t
  write_tollgate_oauth_config "$dir" "  backend: memory"
  start_tollgates "$dir"
  token="$(fetch_token "${TARGET_URL[tollgate]}")"
  write_post_script "$dir/introspect.lua" "token=$token"
  # `{"active":false}` also comes with 200, and wrk cannot see it: check once that the token is active.
  for t in "${TOLLGATES[@]}"; do
    curl -sS -u "$BENCH_CLIENT_ID:$BENCH_CLIENT_SECRET" -d "token=$token" "${TARGET_URL[$t]}oauth/introspect" |
      grep -q '"active":true' || die "introspection of the bench token is not active at $t"
  done
  tollgate_urls_suffix oauth/introspect
  WRK_ARGS=(-s "$dir/introspect.lua")
  compare introspection "${TOLLGATES[@]}"
  WRK_ARGS=()
  stop_tollgates introspection "$dir"
}

# ------------------------------------------------------------------------------------------------

main() {
  local scenarios=("$@") s
  [ ${#scenarios[@]} -eq 0 ] && scenarios=(plain)
  [ "${scenarios[*]}" = all ] && scenarios=(plain jwt_memory jwt_redis token_issuance introspection)
  for s in "${scenarios[@]}"; do
    declare -F "scenario_$s" >/dev/null || die "unknown scenario '$s'"
    [ "$s" = jwt_redis ] && NEED_REDIS=1
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
  : >"$WORK/rss.md" >"$WORK/latency.md" >"$WORK/notes.md" >"$WORK/redis.md"

  start_upstream
  start_nginx_proxy
  start_floor
  for s in "${scenarios[@]}"; do
    "scenario_$s"
  done

  mkdir -p "$OUT_DIR"
  {
    echo "# tollgate load comparison, $(date -u +'%Y-%m-%d %H:%M UTC')"
    echo
    echo "- machine: $(nproc --all) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(uname -r), load average before: $LOADAVG_BEFORE"
    echo "- $("$NGINX_BIN" -v 2>&1), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), $(rustc --version)"
    echo "- the floor: benches/load/floor_proxy.rs (hyper and hyper-util as in Cargo.lock); peers: ${PEERS:-none}"
    echo "- wrk -t$WRK_THREADS -c$CONNECTIONS, warm-up $WARMUP per target, $ROUNDS × $DURATION alternated; proxy on core $PROXY_CORE, wrk + upstream on core $LOAD_CORE"
    echo "- CPU per request: utime+stime of the proxy process (nginx: master + worker) over the run ÷ requests; ratios to nginx and to the floor, medians of the same run"
    [ -s "$RESULTS" ] && python3 "$LIB" report "$RESULTS"
    echo
    echo "Memory:"
    echo
    cat "$WORK/rss.md"
    if [ -s "$WORK/redis.md" ]; then
      echo
      echo "Redis (jwt_redis):"
      echo
      cat "$WORK/redis.md"
    fi
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
