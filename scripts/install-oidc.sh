#!/usr/bin/env bash
# Installs the test OpenID Provider (oidc-provider, pinned with everything it
# pulls in by tests/oidc/package-lock.json) into tests/oidc/node_modules, once;
# and Node.js with npm from Debian's packages when there is no `node`.
# The OIDC tests run tests/oidc/provider.mjs and tests/oidc/browser.mjs with node.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/.*"oidc-provider": "\(.*\)".*/\1/p' tests/oidc/package.json)
installed() {
  node -p 'require("./tests/oidc/node_modules/oidc-provider/package.json").version' 2>/dev/null
}
if command -v node >/dev/null 2>&1 && [ "$(installed)" = "$version" ]; then
  exit 0
fi
if ! command -v node >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq nodejs npm >/dev/null
fi
npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error >/dev/null
echo "oidc-provider $(installed)"
