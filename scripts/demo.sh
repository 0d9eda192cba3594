#!/usr/bin/env bash
# The guided demo: an AI agent's calls through Envoy and countersign, and a
# human approving the one that needs it.
#
# Starts redis-server, Envoy (envoy/envoy.yaml, with its demo upstream) and
# countersign (the embedded configuration's routes, ./policies, an admin API
# with throwaway certificates) on free loopback ports, plays the calls, and
# stops everything it started when it ends, fails or is interrupted.
#
#   scripts/demo.sh            # builds the release binary first if needed
#   scripts/demo.sh --pause    # waits for Enter between steps
#
# COUNTERSIGN_BIN=path runs that binary instead of building one. Every step
# checks its answer: the demo exits non-zero, naming the step, if countersign
# answers otherwise than shown.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
pause=false
case "${1:-}" in
  --pause) pause=true ;;
  "") ;;
  *) echo "usage: scripts/demo.sh [--pause]" >&2; exit 2 ;;
esac

bold=$'\e[1m' dim=$'\e[2m' off=$'\e[0m'
if [ ! -t 1 ] || [ -n "${NO_COLOR:-}" ]; then bold="" dim="" off=""; fi
step() {
  if $pause; then read -r -p "${dim}[Enter]${off}" _ </dev/tty; fi
  printf '\n%s== %s%s\n' "$bold" "$*" "$off"
}
say() { printf '%s\n' "$*"; }
show() { printf '%s$ %s%s\n' "$dim" "$*" "$off"; }
fail() { printf '\ndemo failed: %s\n' "$*" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/countersign-demo.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- What the demo needs ------------------------------------------------
scripts/install-envoy.sh >/dev/null
if ! command -v redis-server >/dev/null 2>&1; then
  say "installing redis-server (Debian package)..."
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq redis-server >/dev/null
fi
bin=${COUNTERSIGN_BIN:-}
if [ -z "$bin" ]; then
  say "building countersign (release; the first build takes a few minutes)..."
  cargo build --release --locked --quiet
  bin=$root/target/release/countersign
fi

read -r p_envoy p_upstream p_authz p_envoy_admin p_otlp p_admin p_metrics p_redis < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(8)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')

# ---- Start everything ------------------------------------------------------
redis-server --port "$p_redis" --bind 127.0.0.1 --save "" --appendonly no \
  >"$work/redis.log" 2>&1 &
pids+=($!)

"$bin" dev-certs "$work/certs" --approver dora >/dev/null
# A configuration file replaces the embedded one: start from it, change the
# ports and the policy directory, and add Redis and the admin API.
sed -e "s|127.0.0.1:9191|127.0.0.1:$p_authz|" -e "s|127.0.0.1:9193|127.0.0.1:$p_metrics|" \
  -e "s|^dir = \"policies\"|dir = \"$root/policies\"|" src/default-config.toml >"$work/countersign.toml"
cat >>"$work/countersign.toml" <<EOF

[redis]
url = "redis://127.0.0.1:$p_redis"

[admin]
listen = "127.0.0.1:$p_admin"
tls_cert = "$work/certs/server.pem"
tls_key = "$work/certs/server-key.pem"
client_ca = "$work/certs/ca.pem"

[[admin.approvers]]
name = "dora"
groups = ["data-owners"]
EOF
"$bin" serve --config "$work/countersign.toml" >"$work/countersign.log" 2>&1 &
pids+=($!)

sed -e "s/port_value: 10000 /port_value: $p_envoy /" -e "s/port_value: 8080 /port_value: $p_upstream /" \
  -e "s/port_value: 9191 /port_value: $p_authz /" -e "s/port_value: 9901 /port_value: $p_envoy_admin /" \
  -e "s/port_value: 4317 /port_value: $p_otlp /" envoy/envoy.yaml >"$work/envoy.yaml"
.venv/bin/envoy -c "$work/envoy.yaml" --concurrency 1 --log-level warn \
  --disable-hot-restart >"$work/envoy.log" 2>&1 &
pids+=($!)

ready() { curl -sf -o /dev/null "$1"; }
for _ in $(seq 100); do
  if ready "http://127.0.0.1:$p_metrics/readyz" && ready "http://127.0.0.1:$p_envoy_admin/ready"; then
    break
  fi
  sleep 0.2
done
ready "http://127.0.0.1:$p_metrics/readyz" || { cat "$work/countersign.log" >&2; fail "countersign did not become ready"; }
ready "http://127.0.0.1:$p_envoy_admin/ready" || { cat "$work/envoy.log" >&2; fail "Envoy did not become ready"; }

api=http://127.0.0.1:$p_envoy
export COUNTERSIGN_ADMIN_ADDR=https://127.0.0.1:$p_admin COUNTERSIGN_ADMIN_CA=$work/certs/ca.pem \
  COUNTERSIGN_ADMIN_CERT=$work/certs/dora.pem COUNTERSIGN_ADMIN_KEY=$work/certs/dora-key.pem
say "${bold}countersign demo${off}: Envoy on $api, countersign on 127.0.0.1:$p_authz"
say "(admin API 127.0.0.1:$p_admin, metrics http://127.0.0.1:$p_metrics/metrics, Redis 127.0.0.1:$p_redis)"

# One call as the agent: prints the exchange, leaves the status in $status
# and the body in $body.
agent_token=$(scripts/demo-token.py agent-7 agents --claim on_behalf_of=alice)
call() {
  local method=$1 path=$2 data=${3:-} approval=${4:-}
  local args=(-s -o "$work/body" -w '%{http_code}' -X "$method" -H "authorization: Bearer $agent_token")
  local shown="curl -X $method $path -H 'authorization: Bearer \$AGENT'"
  if [ -n "$data" ]; then
    args+=(-H 'content-type: application/json' -d "$data")
    shown+=" -d '$data'"
  fi
  if [ -n "$approval" ]; then
    args+=(-H "x-countersign-approval: $approval")
    shown+=" -H 'x-countersign-approval: ${approval:0:12}...'"
  fi
  show "$shown"
  status=$(curl "${args[@]}" "$api$path")
  body=$(cat "$work/body")
  say "HTTP $status  $body"
}
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get(sys.argv[2], ""))' "$body" "$1"; }
expect() { [ "$status" = "$1" ] || fail "$2: expected HTTP $1, got $status"; }

# ---- The story -------------------------------------------------------------
step "1. The agent reads a dataset: allowed, no approval (policies/read-only.cedar)"
call GET /v1/datasets/sales
expect 200 "read"

step "2. It tries to turn audit logging off: denied, and nothing can approve it (policies/audit-logging.cedar)"
call PUT /v1/audit/settings '{"enabled":false}'
expect 403 "audit off"
[ "$(field decision)" = deny ] || fail "audit off: expected decision deny"

step "3. It exports the dataset: held for a data owner (policies/data-export.cedar)"
export_body='{"format":"csv","rows":5000}'
call POST /v1/datasets/sales/export "$export_body"
expect 403 "export"
[ "$(field decision)" = approval_required ] || fail "export: expected approval_required"
id=$(field approval_id)
approval_token=$(field approval_token)
say "The agent keeps the approval token and tells its human: approval $id is pending."

step "4. Dora, a data owner, looks at what is pending"
show "countersign approvals list"
"$bin" approvals list
show "countersign approvals show $id"
"$bin" approvals show "$id"

step "5. Dora approves, with a reason (this policy requires one)"
show "countersign approvals approve $id --reason 'quarterly report, ticket OPS-42'"
"$bin" approvals approve "$id" --reason "quarterly report, ticket OPS-42"

step "6. The agent retries with its approval token: it goes through"
call POST /v1/datasets/sales/export "$export_body" "$approval_token"
expect 200 "retry"

step "7. Once: the same token again is refused (single use)"
call POST /v1/datasets/sales/export "$export_body" "$approval_token"
expect 403 "replay"

step "8. The audit trail: every decision and approval event, in Redis"
show "countersign audit export --config countersign.toml --format text"
"$bin" audit export --config "$work/countersign.toml" --format text | grep -F "$id" \
  || fail "audit: no entry for $id"
say
say "Each entry is also an OpenTelemetry span in the request's trace when"
say "OTEL_EXPORTER_OTLP_ENDPOINT points at a collector (docker compose up: Jaeger)."
say "Next: docs/policy-guide.md to adapt a policy, docs/approver-guide.md for approvers."
say
say "${bold}demo complete${off}: stopping Redis, Envoy and countersign."
