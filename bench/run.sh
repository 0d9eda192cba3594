#!/usr/bin/env bash
# Measures countersign against the floor of one ext_authz hop and prints a
# markdown report (the tables in bench/RESULTS.md). Installs what it needs on
# a fresh machine (Envoy, wrk, redis-server), builds release binaries, then
# runs bench/run.py. Takes about 5 minutes after the build; see bench/README.md.
#
#   bash bench/run.sh [--seconds 10] [--connections 32] [--rates 1000,5000] [--no-criterion] [--only authzen|hop|memory]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-envoy.sh >&2
missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq >&2 && $sudo apt-get install -y -qq "${missing[@]}" >&2
fi
cargo build --release --locked --bin countersign --example loadgen --example floor >&2
cargo bench --locked --bench check --no-run >&2
exec python3 bench/run.py "$@"
