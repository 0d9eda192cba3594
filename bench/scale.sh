#!/usr/bin/env bash
# The figures in docs/SCALING.md: Redis commands, bytes, memory and CPU per
# guarded call and per pending approval, and checks/s on one Redis and on a
# 3-primary Redis Cluster. Installs redis-server if missing, builds release
# binaries, then runs bench/scale.py (about 2 minutes after the build).
#
#   bash bench/scale.sh [--seconds 20] [--pending 5000]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v redis-server >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq >&2 && $sudo apt-get install -y -qq redis-server >&2
fi
cargo build --release --locked --bin countersign --example loadgen >&2
exec python3 bench/scale.py "$@"
