#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs Envoy if it is
# missing (end-to-end tests need it and fail without it), then every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-envoy.sh
cargo test --locked "$@"
