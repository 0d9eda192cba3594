#!/usr/bin/env bash
# Instructions per check, counted by callgrind: the server (countersign, or
# the floor) runs under valgrind, loadgen drives 2,000 checks at 200/s over
# gRPC, and only those are counted. Instruction counts do not depend on what
# else the machine is doing, so these ratios hold on a shared machine where
# CPU-time ratios wander. About 3 minutes after the release build.
#
#   bash bench/instructions.sh
#   COUNTERSIGN=path/to/another/countersign bash bench/instructions.sh   # another build
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null 2>&1 || { sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get install -y -qq valgrind >&2; }
cargo build --release --locked --bin countersign --example loadgen --example floor >&2
source bench/servers.sh
CS=${COUNTERSIGN:-$R/countersign}
$R/examples/loadgen policies --extra 80 --out "$T/p100" --token-uses 1000000000 >/dev/null

# measure LABEL MIX ENV... -- COMMAND...: instructions per check of COMMAND.
measure() {
  local label=$1 mix=$2; shift 2
  local env=(); while [ "$1" != "--" ]; do env+=("$1"); shift; done; shift
  local listen; listen=$(port)
  local out="$T/callgrind.$listen"
  # The floor takes its address as a flag, countersign from its environment.
  local flag=(); [[ $1 == *floor ]] && flag=(--listen "127.0.0.1:$listen")
  env "${env[@]}" COUNTERSIGN_LISTEN="127.0.0.1:$listen" valgrind --tool=callgrind \
    --instr-atstart=no --callgrind-out-file="$out" "$@" "${flag[@]}" 2>"$T/vg.$listen" &
  local pid=$!; pids+=($pid)
  wait_port "$listen"
  local extra=()
  if [ "$mix" = token=1 ]; then
    extra=(--token "$(env "${env[@]}" $R/examples/loadgen token --target "http://127.0.0.1:$listen")")
  fi
  $R/examples/loadgen run --target "http://127.0.0.1:$listen" --duration 3s --rate 100 \
    --connections 1 --streams 4 --mix "$mix" "${extra[@]}" >/dev/null
  callgrind_control -i on "$pid" >/dev/null
  $R/examples/loadgen run --target "http://127.0.0.1:$listen" --duration 10s --rate 200 \
    --connections 1 --streams 8 --mix "$mix" "${extra[@]}" >/dev/null
  sleep 1
  callgrind_control -i off "$pid" >/dev/null
  kill "$pid"; wait "$pid" 2>/dev/null || true
  local total checks
  total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  # Checks counted: calls of the gRPC decoder while counting was on.
  checks=$(callgrind_annotate --inclusive=yes --tree=calling "$out" 2>/dev/null |
    grep -E '>.*Decoder>::decode \(' | head -1 | sed -E 's/.*\(([0-9,]+)x\).*/\1/; s/,//g')
  printf '| %s | %s | %s |\n' "$label" "$checks" "$(( total / checks ))"
}

cs=(COUNTERSIGN_POLICY_DIR="$T/p100" COUNTERSIGN_REDIS_URL="redis://127.0.0.1:$REDIS"
    COUNTERSIGN_METRICS_LISTEN=off COUNTERSIGN_LOG=warn
    OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$OTLP")
echo "| server, check | checks counted | instructions per check |"
echo "|---|---:|---:|"
measure "floor, allow" allow=1 X=1 -- $R/examples/floor
measure "countersign, allow" allow=1 "${cs[@]}" -- "$CS" serve
measure "countersign, allow, unguarded spans sampled out (traceidratio 0.01)" allow=1 "${cs[@]}" \
  OTEL_TRACES_SAMPLER=traceidratio OTEL_TRACES_SAMPLER_ARG=0.01 -- "$CS" serve
measure "countersign, allow, telemetry off" allow=1 "${cs[@]}" OTEL_SDK_DISABLED=true -- "$CS" serve
measure "countersign, token (Redis consume)" token=1 "${cs[@]}" -- "$CS" serve
