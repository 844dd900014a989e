#!/usr/bin/env bash
# The long accuracy run of Redis rate limits by leases (docs/design.md §9e, docs/redis.md "Leases"): every
# scenario of tests/lease_accuracy.rs — 2 and 4 gateway nodes (through the library) on one
# redis-server the harness starts, limits of 5, 50 and 500 requests/s (5 s each) and quotas of 100 and
# 10,000, load spread evenly and skewed 90/10 — asserted against what docs/redis.md promises, with one
# line of figures per scenario. Results: docs/benchmarks.md.
#
#   benches/load/lease-accuracy.sh          release build (the 500/s scenarios need the throughput)
#   PROFILE=debug benches/load/lease-accuracy.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
command -v redis-server >/dev/null 2>&1 || {
  echo "error: redis-server is not installed (apt-get install redis-server)" >&2
  exit 1
}
release=(--release)
[ "${PROFILE:-release}" = debug ] && release=()
cd "$ROOT"
# One scenario at a time (--test-threads 1): the machine's cores go to the nodes under test.
cargo test ${release[@]+"${release[@]}"} --test lease_accuracy -- --ignored --nocapture --test-threads 1 2>&1 |
  tee "${OUT:-/dev/null}" | grep -oE "(rate|quota) .*|test result.*|panicked.*|FAILED.*"
