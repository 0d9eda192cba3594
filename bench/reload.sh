#!/usr/bin/env bash
# Load and reload times of large policy sets: `countersign policy validate`,
# `countersign serve` start-up, and a reload after one file is edited (and
# after a broken edit), at 1,000 and 10,000 generated policies. Builds
# release binaries, then runs bench/reload.py (under a minute after the
# build; pass --countersign to time another build of countersign).
#
#   bash bench/reload.sh [--policies 1000,10000] [--per-file 100] [--countersign PATH]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin countersign --example loadgen >&2
exec python3 bench/reload.py "$@"
