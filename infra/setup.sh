#!/usr/bin/env bash
# Installs the npm dependencies from the lock file (when they changed) and builds dist/.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=node_modules/.pgbridge-lock
if [ ! -f "$stamp" ] || ! cmp -s package-lock.json "$stamp"; then
  echo "setup: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json "$stamp"
fi
export PATH="$PWD/node_modules/.bin:$PATH"
echo "setup: node $(node -v)" >&2
tsc -p tsconfig.json
