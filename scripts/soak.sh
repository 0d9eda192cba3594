#!/usr/bin/env bash
# The long form of tests/soak/: the whole deployment (Envoy with
# envoy/envoy.yaml, countersign, redis-server, all on 127.0.0.1) under mixed
# traffic for SECONDS (default 600), with Redis restarts and policy reloads;
# every answer is checked, RSS must stay flat, and a markdown table of the
# figures is printed at the end. `cargo test` runs the same test for 30 s.
#
# Release build: the memory that matters is the shipped binary's, and the
# faster build leaves the shared cores room, so a missed ext_authz deadline
# means a stall in countersign rather than a slow debug build.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"
case "$seconds" in
  ''|*[!0-9]*) echo "usage: scripts/soak.sh [SECONDS]" >&2; exit 64 ;;
esac
scripts/install-envoy.sh
if ! command -v redis-server >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq redis-server >/dev/null
fi
COUNTERSIGN_SOAK_SECS="$seconds" cargo test --locked --release --test soak -- --nocapture
