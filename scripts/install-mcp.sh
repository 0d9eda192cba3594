#!/usr/bin/env bash
# Installs the MCP Python SDK (`mcp` 2.3.0, with every dependency pinned in
# tests/mcp/requirements.txt) into ./.venv, once.
# The MCP end-to-end test runs tests/mcp/server.py and tests/mcp/client.py with .venv/bin/python.
set -euo pipefail
cd "$(dirname "$0")/.."
version=2.3.0
if [ -x .venv/bin/python ] &&
  [ "$(.venv/bin/python -c 'import importlib.metadata as m, mcp; print(m.version("mcp"))' 2>/dev/null)" = "$version" ]; then
  exit 0
fi
if [ ! -x .venv/bin/python ] && ! python3 -m venv .venv >/dev/null 2>&1; then
  # Debian splits venv out of python3.
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq python3-venv >/dev/null
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r tests/mcp/requirements.txt
.venv/bin/python -c 'import importlib.metadata as m, mcp; print("mcp", m.version("mcp"))'
