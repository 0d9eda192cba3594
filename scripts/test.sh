#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs Envoy and
# redis-server if they are missing (the tests need them and fail without
# them), then every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-envoy.sh
# The MCP end-to-end tests run the official MCP Python SDK (server and client).
scripts/install-mcp.sh
# The OIDC tests run a real OpenID Provider (oidc-provider on Node.js, pinned).
scripts/install-oidc.sh
# `policy test --output junit` is read back with junitparser (pinned).
.venv/bin/pip install --quiet --disable-pip-version-check -r tests/policy/requirements.txt
# AuthZEN clients from PyPI (apparitor, decern) ask the AuthZEN endpoints (pinned).
.venv/bin/pip install --quiet --disable-pip-version-check -r tests/authzen/requirements.txt
# Signed webhooks are verified by the Standard Webhooks Python library (pinned).
.venv/bin/pip install --quiet --disable-pip-version-check -r tests/webhooks/requirements.txt
# Approval tests start their own redis-server on a free port.
if ! command -v redis-server >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq redis-server >/dev/null
fi
cargo test --locked "$@"
