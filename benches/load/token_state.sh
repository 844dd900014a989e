#!/usr/bin/env bash
# State per issued token (docs/design.md §9f; results in docs/benchmarks.md, "Token state"): a burst of
# client_credentials tokens against the release binary, with the memory store and then with Redis.
# Prints the gateway's RSS before and after (memory store) and Redis' key count and `used_memory`
# before and after (Redis store), each divided by the tokens issued.
#
#   benches/load/token_state.sh            environment: TOKENS [1000000]  CONNECTIONS [32]
#                                          BIN [target/release/tollgate]  KEEP_WORKDIR [0]
#
# Needs wrk and redis-server (Debian packages). Ports are picked free; nothing is left running.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TOKENS="${TOKENS:-1000000}"
CONNECTIONS="${CONNECTIONS:-32}"
BIN="${BIN:-$ROOT/target/release/tollgate}"
WARM_UP=20000
SECRET="bench-secret-0123456789"

command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server is needed" >&2; exit 1; }
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release --locked --bin tollgate)

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ "${KEEP_WORKDIR:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
    shuf -i 20000-60000 -n 1
}

HASH="$(printf '%s' "$SECRET" | "$BIN" hash-secret)"
mkdir -p "$WORK/api-definitions"
cat >"$WORK/api-definitions/svc.yaml" <<EOF
listen_path: /svc/
upstream: { url: "http://127.0.0.1:9" }
auth: { type: oauth2 }
oauth:
  grant_types: [client_credentials]
  scopes: [read]
  clients:
    - { client_id: bench, secret_hash: "$HASH", grant_types: [client_credentials], scopes: [read] }
EOF
AUTH="$(printf 'bench:%s' "$SECRET" | base64 -w0)"
cat >"$WORK/token.lua" <<EOF
wrk.method = "POST"
wrk.body = "grant_type=client_credentials"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic $AUTH"
local issued = 0
response = function(status)
  if status == 200 then issued = issued + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format("non-2xx or errors: %d\n", summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
EOF

# Runs wrk until about $1 requests have been made (wrk counts time, not requests: it is given the
# rate measured in a short probe).
burst() {
  local url=$1 count=$2
  local probe rate secs
  probe="$(wrk -t1 -c"$CONNECTIONS" -d3s -s "$WORK/token.lua" "$url" | awk '/Requests\/sec/ {print int($2)}')"
  rate=${probe:-1000}
  secs=$(((count - rate * 3) / (rate > 0 ? rate : 1)))
  [ "$secs" -lt 1 ] && secs=1
  wrk -t1 -c"$CONNECTIONS" -d"${secs}s" -s "$WORK/token.lua" "$url" | grep -E 'Requests/sec|requests in|non-2xx'
}

issued() {
  curl -s -H "Authorization: Bearer $ADMIN_SECRET" "http://127.0.0.1:$ADMIN/apis/svc/clients/bench/sessions" |
    sed -n 's/.*"issued":\([0-9]*\).*/\1/p'
}

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

ADMIN_SECRET="bench-admin-secret-0123456789"
start_gateway() { # $1: storage yaml
  PORT=$(free_port)
  ADMIN=$(free_port)
  cat >"$WORK/gateway.yaml" <<EOF
listen: 127.0.0.1:$PORT
admin: { listen: 127.0.0.1:$ADMIN, secret: $ADMIN_SECRET }
api_definitions: api-definitions
signing: { algorithm: ES256, key_file: key.pem, generate: true }
log: { level: warn }
$1
EOF
  "$BIN" run --config "$WORK/gateway.yaml" >"$WORK/gateway.log" 2>&1 &
  GW=$!
  PIDS+=("$GW")
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && return 0
    sleep 0.1
  done
  cat "$WORK/gateway.log" >&2
  exit 1
}

echo "== memory store: $TOKENS client_credentials tokens"
start_gateway ""
burst "http://127.0.0.1:$PORT/svc/oauth/token" "$WARM_UP" >/dev/null
before_rss=$(rss_kib "$GW")
before_n=$(issued)
burst "http://127.0.0.1:$PORT/svc/oauth/token" "$TOKENS"
after_rss=$(rss_kib "$GW")
after_n=$(issued)
n=$((after_n - before_n))
echo "RSS ${before_rss} KiB -> ${after_rss} KiB over $n tokens: $(((after_rss - before_rss) * 1024 / (n > 0 ? n : 1))) bytes per token"
kill "$GW"
wait "$GW" 2>/dev/null || true

echo "== redis store: $TOKENS client_credentials tokens"
RPORT=$(free_port)
redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
PIDS+=("$!")
sleep 0.5
start_gateway "storage: { backend: redis, redis: { url: \"redis://127.0.0.1:$RPORT/0\" } }"
rcli() { redis-cli -p "$RPORT" "$@"; }
burst "http://127.0.0.1:$PORT/svc/oauth/token" "$WARM_UP" >/dev/null
before_keys=$(rcli DBSIZE)
before_mem=$(rcli INFO memory | awk -F: '/^used_memory:/ {print $2+0}')
before_n=$(issued)
burst "http://127.0.0.1:$PORT/svc/oauth/token" "$TOKENS"
after_keys=$(rcli DBSIZE)
after_mem=$(rcli INFO memory | awk -F: '/^used_memory:/ {print $2+0}')
after_n=$(issued)
n=$((after_n - before_n))
echo "keys ${before_keys} -> ${after_keys}; used_memory ${before_mem} -> ${after_mem} bytes over $n tokens: $(((after_mem - before_mem) / (n > 0 ? n : 1))) bytes per token"
echo "keys: $(rcli --scan | sort | tr '\n' ' ')"
