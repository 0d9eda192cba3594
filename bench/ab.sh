#!/usr/bin/env bash
# CPU per allowed check of two countersign builds, in one run: both serve
# side by side (one Redis, one OTLP sink, the 100 policies of bench/run.sh),
# and loadgen drives each in turn, alternating, for ROUNDS rounds of SECONDS.
# Alternating within one run is what makes the two comparable on a shared
# machine; compare the rows of one run only.
#
#   bash bench/ab.sh path/to/countersign-a path/to/countersign-b [ROUNDS] [SECONDS]
set -euo pipefail
[ $# -ge 2 ] || { sed -n 2,8p "$0" >&2; exit 2; }
a=$(realpath "$1"); b=$(realpath "$2"); rounds=${3:-3}; seconds=${4:-8}
cd "$(dirname "$0")/.."
cargo build --release --locked --example loadgen --example floor >&2
source bench/servers.sh
$R/examples/loadgen policies --extra 80 --out "$T/p100" >/dev/null
ports=(); servers=()
for bin in "$a" "$b"; do
  p=$(port)
  COUNTERSIGN_LISTEN="127.0.0.1:$p" COUNTERSIGN_POLICY_DIR="$T/p100" \
    COUNTERSIGN_REDIS_URL="redis://127.0.0.1:$REDIS" COUNTERSIGN_METRICS_LISTEN=off \
    COUNTERSIGN_LOG=warn OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$OTLP" \
    "$bin" serve >"$T/serve.$p.log" 2>&1 &
  pids+=($!); servers+=($!); ports+=("$p")
  wait_port "$p"
done
$R/examples/loadgen header
for round in $(seq "$rounds"); do
  for i in 0 1; do
    label=$([ "$i" = 0 ] && echo A || echo B)
    $R/examples/loadgen run --target "http://127.0.0.1:${ports[$i]}" --pid "${servers[$i]}" \
      --duration "${seconds}s" --label "$label, round $round"
  done
done
echo
echo "A: $a"
echo "B: $b"
